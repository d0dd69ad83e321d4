"""Learners (``adapt(support) -> Predictor``) for meta-learned, frozen and fine-tuned encoders.

- ``MetaLearner``: a meta-trained ``MetaModel``; adapts with its algorithm's inner loop
  (first order: no meta-gradient is needed at test time) or prototypes for protonet.
- ``FrozenProtoLearner``: the pretrained encoder's prototypes, no training (the floor).
- ``FinetuneLearner``: fresh LoRA + a prototype-initialised linear head trained with Adam on the
  support set alone (the transfer-learning baseline).

Adaptation never modifies the module: adapted tensors live in the predictor's params dict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmeta.errors import InputError, XmetaError
from xmeta.interfaces import Example, Prediction, label_names_of
from xmeta.meta.config import MetaConfig
from xmeta.meta.functional import EPISODE_HEAD, Params, encoder_features
from xmeta.meta.maml import AdaptedState, adapt_episode, episode_logits
from xmeta.meta.model import MetaModel
from xmeta.models.encoder import Encoder, EncoderConfig

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def inference_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for adapting and predicting at ``precision``.

    ``bf16`` roughly halves the time of an encoder forward on CPUs with bf16 units (AVX512-BF16,
    AMX) and on GPUs; on 875 queries of the 25 benchmark languages it changed 0.3% of the
    predictions and left the accuracy unchanged (``eval/results/perf/bf16_check.json``). ``fp32``
    is exact and the default.

    Raises:
        InputError: for another precision name.
    """
    check_precision(precision)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_precision(precision: str) -> None:
    """Raise ``InputError`` unless ``precision`` is one of ``PRECISIONS``."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Evaluation mode (no dropout) for the block, restoring every submodule's previous mode afterwards.

    Flips only the modules that are training: ``module.eval()`` / ``train()`` walk and set all of
    an encoder's ~600 submodules twice, which was a third of a single-query ``predict``.
    """
    flipped = [m for m in module.modules() if m.training]
    for m in flipped:
        m.training = False
    try:
        yield
    finally:
        for m in flipped:
            m.training = True


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for the block without disturbing the caller's RNG state."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _support_tensors(encoder: Encoder, support: Sequence[Example], cache_frozen: bool = False) -> tuple[dict, Tensor]:
    batch = encoder.tokenize([e.text for e in support])
    if cache_frozen:  # inner steps then run only the adapted top layers, on packed tokens
        batch = encoder.cache_frozen_layers(batch, packed=True)
    return batch, torch.tensor([e.label for e in support], dtype=torch.long, device=encoder.device)


class FeatureMemo:
    """Encoder features by text, for learners whose encoder tensors never change at test time.

    Frozen prototypes, ProtoNet and head-only (ANIL-style) adaptation encode every sentence
    with the same encoder, so a benchmark that reuses sentences across episodes (support from
    dev, queries from test) encodes each once. Unique texts are encoded sorted by length so a
    batch pads to similar lengths.
    """

    def __init__(
        self, model: MetaModel, batch_size: int = 64, max_items: int = 500_000, precision: Precision = "fp32"
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.max_items = max_items
        self.precision = precision
        self._store: dict[str, Tensor] = {}

    @torch.no_grad()
    def batch(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """``{"features": (len(texts), d)}``, encoding only texts not seen before."""
        missing = sorted({t for t in texts if t not in self._store}, key=len)
        if len(self._store) + len(missing) > self.max_items:
            self._store.clear()  # bounded memory for long-lived learners; recomputing is always correct
            missing = sorted(set(texts), key=len)
        enc, params = self.model.encoder, self.model.detached_params()
        with eval_mode(self.model), inference_precision(self.precision, enc.device):
            for i in range(0, len(missing), self.batch_size):
                chunk = missing[i : i + self.batch_size]
                feats = encoder_features(self.model, params, enc.packed_inputs(enc.tokenize(chunk)))
                self._store.update(zip(chunk, feats))
        return {"features": torch.stack([self._store[t] for t in texts])}


class EpisodePredictor:
    """Classifies texts with an adapted state (prototypes or a linear episode head).

    Args:
        model: the meta-model whose frozen encoder and head structure are used.
        state: the adapted tensors (detached).
        label_names: names of classes ``0..N-1``.
        batch_size: texts per forward pass.
        precision: "fp32" (exact, the default) or "bf16" autocast (see ``inference_precision``).
    """

    def __init__(
        self,
        model: MetaModel,
        state: AdaptedState,
        label_names: tuple[str, ...],
        cfg: MetaConfig | None = None,
        batch_size: int = 64,
        memo: FeatureMemo | None = None,
        precision: Precision = "fp32",
    ) -> None:
        check_precision(precision)  # reject a bad name here, not at predict time
        self.model = model
        self.state = state
        self.label_names = tuple(label_names)
        self.cfg = cfg or model.cfg
        self.batch_size = batch_size
        self.memo = memo
        self.precision = precision

    @torch.no_grad()
    def logits(self, texts: Sequence[str]) -> Tensor:
        """Logits ``(len(texts), N)`` on the encoder's device (float32 under bf16 autocast)."""
        with eval_mode(self.model), inference_precision(self.precision, self.model.encoder.device):
            outs = [
                episode_logits(self.model, self.state, self._batch(texts[i : i + self.batch_size]), self.cfg)
                for i in range(0, len(texts), self.batch_size)
            ]
        if not outs:
            return torch.zeros(0, len(self.label_names))
        logits = torch.cat(outs)
        return logits.float() if logits.dtype == torch.bfloat16 else logits

    def _batch(self, texts: Sequence[str]) -> dict[str, Tensor]:
        if self.memo is not None:
            return self.memo.batch(texts)
        enc = self.model.encoder
        return enc.packed_inputs(enc.tokenize(texts))  # no compute spent on padding

    def predict(self, texts: Sequence[str]) -> Prediction:
        """Labels and class probabilities for ``texts``."""
        if isinstance(texts, str):
            raise TypeError("predict takes a sequence of texts, not a single string")
        probs = F.softmax(self.logits(texts).double(), dim=-1).cpu().numpy()
        finite = np.isfinite(probs).all(axis=1)
        if not finite.all():  # never a label from NaN scores: argmax would pick class 0 "confidently"
            bad = int(np.flatnonzero(~finite)[0])
            raise XmetaError(
                f"non-finite class scores for the text {texts[bad][:60]!r}: the model's weights or the "
                "cached encoder are corrupt (`xmeta models verify`), or the input overflows this precision"
            )
        labels = probs.argmax(axis=1).astype(np.int64) if len(probs) else np.zeros(0, dtype=np.int64)
        return Prediction(labels, probs, self.label_names)


class MetaLearner:
    """A meta-trained model as a ``Learner``: adapt with the algorithm's inner loop, then predict.

    Args:
        model: the meta-model (meta-learned adapters, head, inner learning rates).
        batch_size: texts per forward pass when predicting.
        inner_steps: adaptation steps; default ``cfg.effective_eval_inner_steps``.
        precision: "fp32" (exact, the default) or "bf16" autocast for adapting and predicting.
    """

    def __init__(
        self,
        model: MetaModel,
        *,
        batch_size: int = 64,
        inner_steps: int | None = None,
        precision: Precision = "fp32",
    ) -> None:
        check_precision(precision)  # reject a bad name before any work
        self.model = model
        self.batch_size = batch_size
        self.precision = precision
        self.inner_steps = model.cfg.effective_eval_inner_steps if inner_steps is None else inner_steps
        adapted = model.inner_param_names(model.cfg) if model.cfg.spec.inner_loop and self.inner_steps else []
        # Encoder tensors fixed at test time -> every text has one embedding: memoise it.
        fixed = not any(n.startswith("encoder.") for n in adapted)
        self.memo = FeatureMemo(model, batch_size, precision=precision) if fixed else None

    @property
    def cfg(self) -> MetaConfig:
        return self.model.cfg

    def adapt_state(self, support: Sequence[Example], *, seed: int = 0) -> AdaptedState:
        """The adapted (detached) tensors for ``support``."""
        label_names = label_names_of(support)
        device = self.model.encoder.device
        with (
            eval_mode(self.model),
            seeded(seed, device),
            torch.enable_grad(),
            inference_precision(self.precision, device),
        ):
            if self.memo is not None:
                batch = self.memo.batch([e.text for e in support])
                labels = torch.tensor([e.label for e in support], dtype=torch.long, device=self.model.encoder.device)
            else:
                batch, labels = _support_tensors(self.model.encoder, support, cache_frozen=True)
            state = adapt_episode(
                self.model,
                self.model.detached_params(),
                batch,
                labels,
                len(label_names),
                steps=self.inner_steps,
                first_order=True,  # the meta-gradient is not needed at test time
            )
        state = state.detach()
        if state.prototypes is not None and state.prototypes.dtype == torch.bfloat16:
            state.prototypes = state.prototypes.float()  # the stored state stays float32 under bf16 autocast
        return state

    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> EpisodePredictor:
        """Adapt to ``support`` (labels ``0..N-1``) and return a predictor."""
        state = self.adapt_state(support, seed=seed)
        return EpisodePredictor(
            self.model, state, label_names_of(support), batch_size=self.batch_size, memo=self.memo,
            precision=self.precision,
        )  # fmt: skip

    def save(self, directory: str | Path, **facts: Any) -> Path:
        """Write the meta-model as an artifact (``xmeta.meta.save_meta_model``; ``facts``: step, training, ...)."""
        from xmeta.meta.checkpoint import save_meta_model

        return save_meta_model(self.model, directory, **facts)

    @classmethod
    def load(cls, directory: str | Path, *, encoder: Encoder | None = None, batch_size: int = 64) -> MetaLearner:
        from xmeta.meta.checkpoint import load_meta_model

        return cls(load_meta_model(directory, encoder=encoder), batch_size=batch_size)


class FrozenProtoLearner(MetaLearner):
    """Prototypes of the pretrained encoder, no training: the benchmark's floor.

    Pass an encoder without adapters (``lora_r=0``) or with untrained ones (LoRA B = 0 leaves
    the pretrained function unchanged).
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        distance: Literal["euclidean", "cosine"] = "euclidean",
        temperature: float | None = None,
        batch_size: int = 64,
    ) -> None:
        cfg = MetaConfig(algorithm="protonet", distance=distance, temperature=temperature)
        super().__init__(MetaModel(encoder, cfg), batch_size=batch_size)

    @classmethod
    def from_config(cls, cfg: EncoderConfig, **kwargs: object) -> FrozenProtoLearner:
        return cls(Encoder.from_config(dataclasses.replace(cfg, lora_r=0)), **kwargs)  # type: ignore[arg-type]


@dataclass
class FinetuneConfig:
    """Support-set fine-tuning (the transfer-learning baseline).

    Attributes:
        steps: Adam steps on the support set.
        lr: learning rate of the fresh LoRA adapters.
        head_lr: learning rate of the prototype-initialised linear head.
        weight_decay: Adam weight decay (L2).
        batch_size: support examples per step; None = the whole support set.
        distance: geometry of the head's prototype init.
        temperature: logit temperature of the head init; None = the distance's default.
    """

    steps: int = 20
    lr: float = 1e-3
    head_lr: float = 1e-2
    weight_decay: float = 0.0
    batch_size: int | None = None
    distance: Literal["euclidean", "cosine"] = "euclidean"
    temperature: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.lr <= 0 or self.head_lr <= 0:
            raise ValueError(f"lr and head_lr must be > 0, got {self.lr}, {self.head_lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def fresh_lora(params: Params, generator: torch.Generator) -> Params:
    """Re-initialised adapter tensors as peft does: A ~ U(+-1/sqrt(fan_in)) (kaiming a=sqrt(5)), B = 0."""
    out = {}
    for n, p in params.items():
        if "lora_A" in n:
            bound = 1.0 / math.sqrt(p.shape[1])
            t = torch.empty(p.shape, dtype=p.dtype).uniform_(-bound, bound, generator=generator).to(p.device)
        else:
            t = torch.zeros_like(p)
        out[n] = t.requires_grad_(True)
    return out


class FinetuneLearner:
    """Fine-tune fresh LoRA adapters and a linear head on the support set alone.

    The head starts as the prototype classifier of the pretrained encoder (LoRA B = 0 at init),
    so step 0 equals ``FrozenProtoLearner``; Adam then trains adapters and head together.

    Args:
        encoder: pretrained encoder with LoRA adapters (their current values are ignored).
        cfg: fine-tuning settings.
        batch_size: texts per forward pass when predicting.
    """

    def __init__(self, encoder: Encoder, cfg: FinetuneConfig | None = None, *, batch_size: int = 64) -> None:
        self.cfg = cfg or FinetuneConfig()
        meta_cfg = MetaConfig(
            algorithm="protomaml", inner_steps=0, distance=self.cfg.distance, temperature=self.cfg.temperature
        )
        self.model = MetaModel(encoder, meta_cfg)
        self.batch_size = batch_size

    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> EpisodePredictor:
        label_names = label_names_of(support)
        enc = self.model.encoder
        batch, labels = _support_tensors(enc, support)
        gen = torch.Generator().manual_seed(seed)
        lora = fresh_lora({n: p for n, p in self.model.meta_params().items() if "lora_" in n}, gen)
        with eval_mode(self.model), seeded(seed, enc.device), torch.enable_grad():
            init = adapt_episode(self.model, lora, batch, labels, len(label_names), steps=0)
            head = {n: init.params[n].detach().requires_grad_(True) for n in EPISODE_HEAD}
            groups = [{"params": list(head.values()), "lr": self.cfg.head_lr}]
            if lora:
                groups.append({"params": list(lora.values()), "lr": self.cfg.lr})
            opt = torch.optim.Adam(groups, weight_decay=self.cfg.weight_decay)
            n, bs = len(support), self.cfg.batch_size or len(support)
            for _ in range(self.cfg.steps):
                idx = torch.randperm(n, generator=gen)[:bs].to(enc.device) if bs < n else None
                sub = batch if idx is None else {k: v[idx] for k, v in batch.items()}
                target = labels if idx is None else labels[idx]
                logits = episode_logits(self.model, AdaptedState({**lora, **head}), sub)
                loss = F.cross_entropy(logits, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        state = AdaptedState({k: v.detach() for k, v in {**lora, **head}.items()})
        return EpisodePredictor(self.model, state, label_names, batch_size=self.batch_size)
