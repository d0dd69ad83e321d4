"""``AdaptedPredictor``: a meta-trained encoder adapted to one support set, savable and reloadable.

It wraps ``xmeta.meta.EpisodePredictor`` (same logits as the benchmark's ``meta:`` method) and
adds what a user of the result needs: length-sorted batching for large inputs, ``save`` to the
artifact format of ``xmeta.adaptation.artifact`` and ``load`` from it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import save_file

from xmeta.adaptation.artifact import check_metadata, model_card, now
from xmeta.artifacts import (
    ADAPTER_DIR,
    CARD,
    FORMAT,
    PARAMS,
    ArtifactError,
    Manifest,
    base_model_of,
    front_matter,
    open_artifact,
    write_artifact,
)
from xmeta.config import to_dict
from xmeta.errors import InputError
from xmeta.interfaces import Prediction
from xmeta.meta.checkpoint import configs_of, head_tensors, load_params, peft_writer, usage
from xmeta.meta.config import MetaConfig
from xmeta.meta.learners import EpisodePredictor, Precision
from xmeta.meta.maml import AdaptedState
from xmeta.meta.model import MetaModel
from xmeta.meta.precision import check_precision
from xmeta.models.encoder import Encoder

logger = logging.getLogger(__name__)

_LOG_SCALE = "head.log_scale"
PRECISION_CHOICES: tuple[str, ...] = ("fp32", "bf16", "auto")
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX; Linux ``/proc/cpuinfo`` flags).

    Without those units oneDNN emulates bf16 and autocast is slower than fp32, so ``auto`` keeps fp32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return bool(_BF16_CPU_FLAGS & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: torch.device | None = None) -> Precision:
    """``precision``, or for ``"auto"``: bf16 on CPUs with bf16 units and on CUDA GPUs that support
    bf16, fp32 otherwise (``device``: where the model runs, default CPU).

    Raises:
        InputError: for another name than fp32, bf16 or auto.
    """
    if precision != "auto":
        check_precision(precision)
        return precision  # type: ignore[return-value]
    device = device or torch.device("cpu")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def artifact_tensors(model: MetaModel, state: AdaptedState) -> dict[str, Any]:
    """What an artifact stores of an adapted state: adapters, head tensors and the episode head's
    state (its ``tensor_names``), no inner learning rates."""
    # Meta-SGD's inner learning rates only matter while adapting; the temperature is stored even
    # when it is a fixed buffer, so that the artifact alone decides the logits.
    tensors = {k: v for k, v in state.params.items() if not k.startswith("inner_lrs.")}
    tensors.setdefault(_LOG_SCALE, model.head.log_scale.detach())
    tensors.update(state.head.tensors)
    return tensors


def expected_shapes(model: MetaModel, n_way: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors an artifact of ``model`` with ``n_way`` classes must hold."""
    shapes = {n: tuple(p.shape) for n, p in model.meta_params().items() if not n.startswith("inner_lrs.")}
    shapes[_LOG_SCALE] = tuple(model.head.log_scale.shape)
    shapes.update(model.cfg.episode_head.shapes(n_way, model.embed_dim))
    return shapes


class AdaptedPredictor:
    """A classifier adapted to one support set (implements the ``Predictor`` protocol).

    Args:
        model: the meta-model (frozen encoder + head structure) the state belongs to.
        state: adapted tensors (detached).
        label_names: class names by label id.
        metadata: JSON-able facts for the artifact (language, support statistics, source model).
        batch_size: texts per forward pass.
        meta_config: the algorithm settings to record (default ``model.cfg``).
        precision: "fp32" (exact, the default) or "bf16" autocast when predicting (about 2x faster
            on CPUs with bf16 units and on GPUs; see ``xmeta.meta.inference_precision``); "auto"
            picks one of them for the encoder's device (``resolve_precision``).

    Attributes:
        label_names: class names by label id.
        lang: language code of the support set.
        metadata: what ``save`` records in the manifest's ``info`` (with the label names).
    """

    def __init__(
        self,
        model: MetaModel,
        state: AdaptedState,
        label_names: Sequence[str],
        *,
        metadata: dict[str, Any] | None = None,
        batch_size: int = 64,
        meta_config: MetaConfig | None = None,
        precision: Precision | Literal["auto"] = "fp32",
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.model = model
        self.state = state
        self.label_names = tuple(label_names)
        self.metadata = dict(metadata or {})
        self.meta_config = meta_config or model.cfg
        self.precision = resolve_precision(precision, model.encoder.device)
        self._episode = EpisodePredictor(
            model, state, self.label_names, batch_size=batch_size, precision=self.precision
        )

    @property
    def lang(self) -> str:
        return str(self.metadata.get("lang", "und"))

    @property
    def batch_size(self) -> int:
        return self._episode.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if value < 1:
            raise InputError(f"batch size must be >= 1, got {value}")
        self._episode.batch_size = value

    def predict(self, texts: Sequence[str]) -> Prediction:
        """Labels and class probabilities for ``texts`` (in input order).

        Texts are run in batches of similar token counts (then put back in order), so a batch
        carries almost no padding (see ``EpisodePredictor._batch``). For inputs larger than
        memory, call this per chunk (``xmeta.adaptation.texts.chunked``), as ``xmeta predict`` does.
        """
        if isinstance(texts, str):
            raise TypeError("predict takes a sequence of texts, not a single string")
        texts = list(texts)
        order = self._episode.length_order(texts)
        pred = self._episode.predict([texts[i] for i in order])
        probs = np.empty_like(pred.probs)
        probs[order] = pred.probs
        labels = probs.argmax(axis=1).astype(np.int64) if len(probs) else np.zeros(0, dtype=np.int64)
        return Prediction(labels, probs, self.label_names)

    def save(self, directory: str | Path) -> Path:
        """Write the artifact (``xmeta.artifacts``: tensors, peft export, model card) to ``directory``."""
        enc = self.model.encoder
        info = {**self.metadata, "label_names": list(self.label_names)}
        info.setdefault("created", now())
        base, _ = base_model_of(enc.cfg.model)
        manifest = Manifest("adapted", to_dict(enc.cfg), to_dict(self.meta_config), base_model=base, info=info)
        tensors = {k: v.detach().cpu().contiguous() for k, v in artifact_tensors(self.model, self.state).items()}
        head = head_tensors(self.model, tensors)
        head.update(self.state.head.map(lambda t: t.detach().cpu().contiguous()).exported())
        head_meta = {"label_names": json.dumps(list(self.label_names), ensure_ascii=False)}
        card_info = {**info, "encoder": manifest.encoder, "xmeta_version": manifest.xmeta_version}
        langs = [self.lang] if self.lang != "und" else []
        text = (
            front_matter(manifest, langs, [], "text-classification")
            + model_card(card_info)
            + "\n"
            + usage(manifest, classifier=True)
        )
        writers = {
            PARAMS: lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}),
            ADAPTER_DIR: peft_writer(tensors, enc, base, head, head_meta),
            CARD: lambda p: p.write_text(text, encoding="utf-8"),
        }
        return write_artifact(directory, manifest, writers)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        encoder: Encoder | None = None,
        batch_size: int = 64,
        precision: Precision | Literal["auto"] = "fp32",
    ) -> AdaptedPredictor:
        """Rebuild a predictor from an artifact (the backbone comes from the encoder config via the zoo).

        Every file is verified against its digest first, and non-finite tensors are refused.

        Args:
            directory: written by ``save`` / ``xmeta adapt --out``.
            encoder: an already built encoder with the same adapter layout (skips loading the backbone).
            batch_size: texts per forward pass.
            precision: "fp32", "bf16" or "auto" (see the class).

        Raises:
            ArtifactError: missing or corrupt files, unsupported format version, invalid configs, or
                tensors that do not fit the model.
        """
        manifest = open_artifact(directory, "adapted")
        weights = manifest.params_path
        label_names = check_metadata(manifest)
        enc_cfg, meta_cfg = configs_of(manifest)
        # Tensors before the encoder: a bad file is reported before the (slow) backbone load.
        tensors = load_params(manifest)
        if encoder is None:
            encoder = Encoder.from_config(enc_cfg)
        model = MetaModel(encoder, meta_cfg)
        want = expected_shapes(model, len(label_names))
        missing, unexpected = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
        if missing or unexpected:
            raise ArtifactError(
                f"{weights}: tensors do not fit the stored configs (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        for name, shape in want.items():
            if tuple(tensors[name].shape) != shape:
                raise ArtifactError(f"{weights}: {name} has shape {tuple(tensors[name].shape)}, expected {shape}")
        params = {k: v.to(encoder.device, encoder.dtype) for k, v in tensors.items()}
        head_cls = model.cfg.episode_head
        episode_head = head_cls({n: params.pop(n) for n in head_cls.tensor_names}, meta_cfg.distance)
        state = AdaptedState(params, episode_head)
        keep = {k: v for k, v in manifest.info.items() if k != "label_names"}
        return cls(
            model, state, label_names, metadata=keep, batch_size=batch_size, meta_config=meta_cfg, precision=precision
        )


def load_predictor(
    directory: str | Path, *, batch_size: int = 64, precision: Precision | Literal["auto"] = "fp32"
) -> AdaptedPredictor:
    """Load an adapted model saved by ``AdaptedPredictor.save`` or ``xmeta adapt --out``.

    Raises:
        InputError: see ``AdaptedPredictor.load``.
    """
    return AdaptedPredictor.load(directory, batch_size=batch_size, precision=precision)
