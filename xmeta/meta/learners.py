"""Learners (``adapt(support) -> Predictor``) for meta-learned and frozen encoders.

- ``MetaLearner``: a meta-trained ``MetaModel``; adapts with its algorithm's inner loop
  (first order: no meta-gradient is needed at test time) or prototypes for protonet.
- ``FrozenProtoLearner``: the pretrained encoder's prototypes, no training (the floor).

``FinetuneLearner`` (the transfer-learning baseline) is in ``xmeta.meta.finetune``. Adaptation
never modifies the module: adapted tensors live in the predictor's state.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xmeta.errors import XmetaError
from xmeta.interfaces import Example, Prediction, label_names_of
from xmeta.meta.cache import PER_EPISODE, RUN_ALL_LAYERS, FrozenLayers
from xmeta.meta.config import MetaConfig
from xmeta.meta.functional import subdict
from xmeta.meta.maml import AdaptedState, adapt_episode, episode_logits
from xmeta.meta.memo import FeatureMemo
from xmeta.meta.model import MetaModel
from xmeta.meta.modes import eval_mode, seeded
from xmeta.meta.precision import Precision, check_precision, inference_precision
from xmeta.models.encoder import Encoder, EncoderConfig
from xmeta.models.inference import InferenceLayers
from xmeta.models.inputs import Batch, EncoderInputs, Features


def support_inputs(
    encoder: Encoder, support: Sequence[Example], frozen: FrozenLayers = RUN_ALL_LAYERS
) -> tuple[EncoderInputs, Tensor]:
    """A support set's encoder inputs (see ``FrozenLayers``) and labels, on the encoder's device."""
    (batch,) = frozen.inputs(encoder, [support], encoder.device)
    return batch, torch.tensor([e.label for e in support], dtype=torch.long, device=encoder.device)


# A batch whose padded grid is within this factor of its real tokens runs padded: as one fixed grid in
# the prediction layers (``xmeta.models.inference``), or the backbone's own layers on the general path.
# With length-sorted input (``length_order``, as ``AdaptedPredictor`` sorts) that is nearly every
# batch, and it skips the packed layers' per-layer gathers and scatters (about 1.6x faster under bf16
# autocast on a 2-core AVX512-BF16 CPU, torch 2.13). Batches of mixed lengths still pack.
PADDED_OVERHEAD_MAX = 1.15


class EpisodePredictor:
    """Classifies texts with an adapted state (prototypes or a linear episode head).

    Args:
        model: the meta-model whose frozen encoder and projection are used.
        state: the adapted tensors and episode head (detached).
        label_names: names of classes ``0..N-1``.
        batch_size: texts per forward pass.
        precision: "fp32" (exact, the default) or "bf16" autocast (see ``inference_precision``).
    """

    def __init__(
        self,
        model: MetaModel,
        state: AdaptedState,
        label_names: tuple[str, ...],
        batch_size: int = 64,
        memo: FeatureMemo | None = None,
        precision: Precision = "fp32",
    ) -> None:
        check_precision(precision)  # reject a bad name here, not at predict time
        self.model = model
        self.state = state
        self.label_names = tuple(label_names)
        self.batch_size = batch_size
        self.memo = memo
        self.precision = precision

    @torch.no_grad()
    def logits(self, texts: Sequence[str]) -> Tensor:
        """Logits ``(len(texts), N)`` on the encoder's device (float32 under bf16 autocast)."""
        layers = self.inference_layers
        with eval_mode(self.model), inference_precision(self.precision, self.model.encoder.device):
            outs = []
            for i in range(0, len(texts), self.batch_size):
                batch = self._batch(texts[i : i + self.batch_size])
                if layers is not None and not isinstance(batch, Features):
                    batch = Features(layers(batch))
                outs.append(episode_logits(self.model, self.state, batch))
        if not outs:
            return torch.zeros(0, len(self.label_names))
        logits = torch.cat(outs)
        return logits.float() if logits.dtype == torch.bfloat16 else logits

    @functools.cached_property
    def inference_layers(self) -> InferenceLayers | None:
        """The encoder's layers with the state's adapters, prepared for prediction once
        (``xmeta.models.inference``); None with a memo (it embeds texts itself) or an encoder those
        layers do not reproduce (the general ``functional_call`` path then runs)."""
        if self.memo is not None:
            return None
        params = subdict(self.state.params, "encoder.")
        return InferenceLayers.for_precision(self.model.encoder, params, self.precision)

    def length_order(self, texts: Sequence[str]) -> list[int]:
        """Indices of ``texts`` by token count (stable): consecutive batches of this order hold
        sequences of similar length, so packed attention needs few, nearly full buckets."""
        lengths = [len(ids) for ids in self.model.encoder.token_ids(texts)] if texts else []
        return sorted(range(len(texts)), key=lengths.__getitem__)

    def _batch(self, texts: Sequence[str]) -> Batch:
        if self.memo is not None:
            return self.memo.batch(texts)
        enc = self.model.encoder
        tokens = enc.tokenize(texts)
        mask = tokens.attention_mask
        if mask.numel() <= PADDED_OVERHEAD_MAX * int(mask.sum()):
            return tokens  # nearly no padding (length-sorted input): the backbone's own padded layers
        return enc.packed_inputs(tokens)  # no compute spent on padding

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
        self.adapt_cfg = model.cfg  # the settings of the adaptation (test-time variants replace them)
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
                # Inner steps then run only the adapted top layers, on packed tokens.
                batch, labels = support_inputs(self.model.encoder, support, PER_EPISODE)
            state = adapt_episode(
                self.model,
                self.model.detached_params(),
                batch,
                labels,
                len(label_names),
                self.adapt_cfg,
                steps=self.inner_steps,
                first_order=True,  # the meta-gradient is not needed at test time
            )
        state = state.detach()
        # The head's stored state stays float32 under bf16 autocast (prototypes are means of bf16 embeddings).
        state.head = state.head.map(lambda t: t.float() if t.dtype == torch.bfloat16 else t)
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
