"""Sentence encoder: a Hugging Face encoder + tokenizer, pooling, optional LoRA adapters.

The backbone's own weights are always frozen; the only trainable tensors are LoRA adapters,
so meta-learning can run the module through ``torch.func.functional_call`` with a dict of just
those tensors (no copy of the backbone). Second-order meta-gradients need eager attention
(fused SDPA kernels have no double backward): choose it in the config the encoder is built from
(``xmeta.meta.encoder_config_for``); ``supports_double_backward`` says whether an encoder can.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from xmeta.errors import ModelUnavailableError
from xmeta.models.inputs import EncoderInputs, HiddenStates, PackedStates, TokenBatch
from xmeta.models.packed import PackedLayout, packed_bert_layer, pool_packed, supports_packing

if TYPE_CHECKING:
    from peft import LoraConfig

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
_LAYER_RE = re.compile(r"\.layer\.(\d+)\.")
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class EncoderConfig:
    """How to build a sentence encoder.

    Attributes:
        model: zoo name, hub id or local directory (resolved by ``xmeta.models.zoo.resolve_model``).
        pooling: "mean" over non-padding tokens (e5's pooling) or "cls" (first token).
        normalize: L2-normalise sentence embeddings.
        text_prefix: prepended to every text (e5 expects "query: "; use "" for other models).
        max_length: truncation length in tokens.
        lora_r: LoRA rank; 0 means no adapters (a frozen encoder, e.g. for head-only training).
        lora_alpha: LoRA scaling numerator (scale = alpha / r).
        lora_dropout: dropout on the LoRA input.
        target_modules: module names that receive adapters (BERT/XLM-R: query, key, value, dense).
        layers_to_transform: layer indices that receive adapters; None means all.
        lora_top_layers: shorthand for the top N layers; exclusive with ``layers_to_transform``.
        attn_implementation: "sdpa" (fast) or "eager" (twice differentiable: second-order meta-training).
        dtype: parameter dtype of backbone and adapters.
    """

    model: str = "multilingual-e5-small"
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = False
    text_prefix: str = "query: "
    max_length: int = 128
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("query", "value")
    layers_to_transform: tuple[int, ...] | None = None
    lora_top_layers: int | None = None
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    dtype: Literal["float32", "float64", "bfloat16", "float16"] = "float32"

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {self.attn_implementation!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        if self.lora_r > 0 and self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        self.target_modules = tuple(self.target_modules)
        if self.lora_r > 0 and not self.target_modules:
            raise ValueError("target_modules must name at least one module when lora_r > 0")
        if self.layers_to_transform is not None:
            self.layers_to_transform = tuple(self.layers_to_transform)
            if not self.layers_to_transform or min(self.layers_to_transform) < 0:
                raise ValueError(f"layers_to_transform must be non-negative indices, got {self.layers_to_transform}")
            if self.lora_top_layers is not None:
                raise ValueError("set either layers_to_transform or lora_top_layers, not both")
        if self.lora_top_layers is not None and self.lora_top_layers < 1:
            raise ValueError(f"lora_top_layers must be >= 1, got {self.lora_top_layers}")


class Encoder(nn.Module):
    """Frozen HF encoder + pooling (+ LoRA). ``forward`` maps token tensors to sentence embeddings.

    Args:
        backbone: an encoder-only ``PreTrainedModel`` (BERT, XLM-R, ...); it is modified in place
            (LoRA injected, weights frozen, cast to ``cfg.dtype``).
        tokenizer: the matching (fast) tokenizer.
        cfg: pooling, LoRA and dtype settings; ``cfg.model`` is only recorded.
    """

    def __init__(self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None  # BERT's NSP pooler is never used for embeddings; skip its compute
        backbone.requires_grad_(False)
        n_layers = int(backbone.config.num_hidden_layers)
        self.lora_layers: tuple[int, ...] = ()
        if cfg.lora_r > 0:
            self.lora_layers = self._lora_layer_indices(n_layers)
            from peft import inject_adapter_in_model

            lora = self.lora_config()
            # In place and without a PeftModel wrapper: parameter names stay the backbone's own
            # plus ``...lora_A.default.weight``, and only the adapters require grad.
            backbone = inject_adapter_in_model(lora, backbone)
            if not any("lora_" in n for n, _ in backbone.named_parameters()):
                raise ValueError(f"no module matched target_modules={list(cfg.target_modules)}")
        self.backbone = backbone.to(DTYPES[cfg.dtype])
        if cfg.attn_implementation != self.attn_implementation:
            self.set_attn_implementation(cfg.attn_implementation)

    def lora_config(self, **extra: object) -> LoraConfig:
        """peft's ``LoraConfig`` of this encoder's adapters (``extra``: e.g. ``task_type`` for an export)."""
        from peft import LoraConfig

        cfg = self.cfg
        return LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules),
            layers_to_transform=list(self.lora_layers),
            bias="none",
            **extra,
        )

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> Encoder:
        """Load ``cfg.model`` (zoo name, hub id or directory) and build the encoder."""
        from transformers import AutoModel, AutoTokenizer

        path = resolve_encoder_path(cfg.model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs = {"attn_implementation": cfg.attn_implementation, "dtype": DTYPES[cfg.dtype]}
        try:  # BERT-family checkpoints (e5) have no pooler weights; don't build one to drop it
            backbone = AutoModel.from_pretrained(path, add_pooling_layer=False, **kwargs)
        except TypeError:  # architectures without a pooler option
            backbone = AutoModel.from_pretrained(path, **kwargs)
        return cls(backbone.eval(), tokenizer, cfg)

    # ---- properties -------------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.backbone.config.num_hidden_layers)

    @property
    def attn_implementation(self) -> str:
        return str(self.backbone.config._attn_implementation)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    @property
    def first_trainable_layer(self) -> int:
        """Lowest layer holding adapters (``num_layers`` if none): hidden states below it are constant."""
        return min(self.lora_layers, default=self.num_layers)

    def set_attn_implementation(self, impl: str) -> None:
        self.backbone.set_attn_implementation(impl)

    @property
    def supports_double_backward(self) -> bool:
        """True with eager attention: fused SDPA kernels have no double backward (second-order MAML)."""
        return self.attn_implementation == "eager"

    def _lora_layer_indices(self, n_layers: int) -> tuple[int, ...]:
        if self.cfg.lora_top_layers is not None:
            top = min(self.cfg.lora_top_layers, n_layers)
            return tuple(range(n_layers - top, n_layers))
        if self.cfg.layers_to_transform is None:
            return tuple(range(n_layers))
        bad = [i for i in self.cfg.layers_to_transform if i >= n_layers]
        if bad:
            raise ValueError(f"layers_to_transform {bad} out of range for a {n_layers}-layer encoder")
        return tuple(sorted(set(self.cfg.layers_to_transform)))

    # ---- tokenisation and forward -----------------------------------------------------------

    def tokenize(self, texts: Sequence[str], device: torch.device | None = None) -> TokenBatch:
        """Prefix, tokenize, pad and truncate ``texts``; returns the tensors ``forward`` takes."""
        if isinstance(texts, str):
            raise TypeError("tokenize takes a sequence of texts, not a single string")
        batch = self.tokenizer(
            [self.cfg.text_prefix + t for t in texts],
            padding=True,
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
        )
        device = device or self.device
        return TokenBatch(**{k: batch[k].to(device) for k in INPUT_KEYS if k in batch})

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Unpadded token ids of ``texts``: exactly the real tokens ``tokenize`` would give each text."""
        return self.tokenizer([self.cfg.text_prefix + t for t in texts], truncation=True,
                              max_length=self.cfg.max_length)["input_ids"]  # fmt: skip

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        hidden_states: Tensor | None = None,
        start_layer: int = 0,
        lengths: Tensor | None = None,
    ) -> Tensor:
        """Sentence embeddings ``(batch, hidden)``.

        Either from tokens (``input_ids``), or, to skip constant frozen layers, from
        ``hidden_states`` entering layer ``start_layer`` (see ``hidden_states_at``): padded
        ``(batch, seq, hidden)`` with ``attention_mask``, or packed ``(tokens, hidden)`` with the
        per-sequence ``lengths`` (see ``pack``; no compute is spent on padding).
        """
        if lengths is not None:
            if hidden_states is None or hidden_states.dim() != 2:
                raise ValueError("lengths is given: hidden_states must be packed (tokens, hidden)")
            return self._forward_packed(hidden_states, lengths, start_layer)
        if attention_mask is None:
            if input_ids is None:
                raise ValueError("attention_mask is required with hidden_states")
            attention_mask = torch.ones_like(input_ids)
        if hidden_states is None:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            last = out.last_hidden_state
        else:
            last = self._run_layers(hidden_states, attention_mask, start_layer, self.num_layers)
        return self.pool(last, attention_mask)

    def pool(self, last_hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """Mean (over the mask) or CLS pooling, then optional L2 normalisation."""
        if self.cfg.pooling == "cls":
            emb = last_hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
            emb = (last_hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        if self.cfg.normalize:
            emb = nn.functional.normalize(emb, dim=-1)
        return emb

    def hidden_states_at(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None, *, layer: int
    ) -> Tensor:
        """Hidden states entering ``layer`` (0 = embedding output). Constant below ``first_trainable_layer``."""
        if not 0 <= layer <= self.num_layers:
            raise ValueError(f"layer must be in [0, {self.num_layers}], got {layer}")
        h = self.backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        return self._run_layers(h, attention_mask, 0, layer)

    def cache_frozen_layers(self, batch: EncoderInputs, *, packed: bool = False) -> EncoderInputs:
        """Inputs for ``forward`` that skip the layers below ``first_trainable_layer``.

        Those layers hold no adapter, so their output does not depend on any meta-parameter:
        compute it once per batch (without grad) and run only the adapted top layers in every
        inner step. Without ``packed``, returns ``batch`` unchanged when the lowest layer is
        adapted; with ``packed`` (and a BERT-style backbone, see ``supports_packing``), the hidden
        states are packed without padding, also at layer 0 (the embedding output).
        """
        start = self.first_trainable_layer
        if not isinstance(batch, TokenBatch) or (start == 0 and not (packed and self.supports_packing)):
            return batch
        return self.hidden_inputs(batch, layer=start, packed=packed)

    def hidden_inputs(self, batch: TokenBatch, *, layer: int = 0, packed: bool = True) -> HiddenStates | PackedStates:
        """``forward`` inputs holding the (gradient-free) hidden states entering ``layer``.

        ``packed`` (BERT-style encoders only; otherwise ignored) drops the padding: the layers from
        ``layer`` on then compute on real tokens only (attention alone sees a padded grid).
        """
        with torch.no_grad():
            h = self.hidden_states_at(batch.input_ids, batch.attention_mask, batch.token_type_ids, layer=layer)
        if packed and self.supports_packing:
            h, lengths = self.pack(h, batch.attention_mask)
            return PackedStates(h, lengths, layer)
        return HiddenStates(h, batch.attention_mask, layer)

    # ---- packed (padding-free) layers ---------------------------------------------------------

    def packed_inputs(self, batch: EncoderInputs) -> EncoderInputs:
        """Inputs equivalent to the token ``batch`` that skip padding: packed embeddings when
        ``supports_packing``, else ``batch`` itself."""
        if not isinstance(batch, TokenBatch) or not self.supports_packing:
            return batch
        return self.hidden_inputs(batch, layer=0)

    @property
    def supports_packing(self) -> bool:
        """True for BERT-style encoders (BERT, XLM-R, e5), whose layers can run packed."""
        cached = self.__dict__.get("_supports_packing")
        if cached is None:
            cached = self.__dict__["_supports_packing"] = supports_packing(self.backbone)
        return cached

    @staticmethod
    def pack(hidden_states: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Padded ``(batch, seq, hidden)`` -> packed ``(tokens, hidden)`` and per-sequence ``lengths``."""
        mask = attention_mask.bool()
        return hidden_states[mask], mask.sum(1)

    def _forward_packed(self, h: Tensor, lengths: Tensor, start: int) -> Tensor:
        if not self.supports_packing:
            raise NotImplementedError(f"packed inputs need a BERT-style encoder, got {type(self.backbone)}")
        layout = PackedLayout.of(lengths)
        h = layout.sort(h)
        eager = self.attn_implementation == "eager"  # the written-out maths: twice differentiable
        for layer in self.backbone.encoder.layer[start:]:
            h = packed_bert_layer(layer, h, layout, eager)
        emb = pool_packed(h, layout, self.cfg.pooling)
        return nn.functional.normalize(emb, dim=-1) if self.cfg.normalize else emb

    def _run_layers(self, h: Tensor, attention_mask: Tensor, start: int, stop: int) -> Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        layers = getattr(getattr(self.backbone, "encoder", None), "layer", None)
        if layers is None:
            raise NotImplementedError(f"layer-wise forward needs a BERT-style encoder, got {type(self.backbone)}")
        mask = create_bidirectional_mask(config=self.backbone.config, inputs_embeds=h, attention_mask=attention_mask)
        for layer in layers[start:stop]:
            h = layer(h, mask)
        return h

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        """Embeddings of ``texts`` with the module's current weights, in batches, without grad."""
        outs = [
            self(**self.packed_inputs(self.tokenize(texts[i : i + batch_size])))
            for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(outs) if outs else torch.empty(0, self.hidden_size, dtype=self.dtype)


def resolve_encoder_path(name_or_path: str) -> Path:
    """A local directory for ``name_or_path`` via the model zoo (imported lazily: it is optional here)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    try:
        from xmeta.models.zoo import resolve_model
    except ImportError as err:  # pragma: no cover - zoo is part of the package
        raise ModelUnavailableError(f"cannot resolve {name_or_path!r}: model zoo unavailable ({err})") from None
    return Path(resolve_model(name_or_path))


def lora_layer_of(name: str) -> int | None:
    """Layer index in a parameter name such as ``...encoder.layer.11.attention...`` (None if absent)."""
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None
