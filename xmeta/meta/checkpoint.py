"""Save/load meta-learned parameters: safetensors tensors + a JSON config, never pickle.

A checkpoint directory holds ``meta_params.safetensors`` (adapters, head, learned inner
learning rates and temperature; the frozen backbone is not copied) and ``xmeta_meta.json``
(format tag, ``EncoderConfig``, ``MetaConfig`` and free-form ``extra`` such as the training
step). The backbone is re-resolved from ``EncoderConfig.model`` through the model zoo.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from xmeta.config import ConfigError, from_dict, to_dict
from xmeta.errors import InputError
from xmeta.meta.config import MetaConfig
from xmeta.meta.model import MetaModel
from xmeta.models.encoder import Encoder, EncoderConfig

logger = logging.getLogger(__name__)

FORMAT = "xmeta-meta/1"
CONFIG_FILE = "xmeta_meta.json"
WEIGHTS_FILE = "meta_params.safetensors"


def save_meta_model(model: MetaModel, directory: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s meta-parameters and configs to ``directory`` (created if needed)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.meta_state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": FORMAT})
    config = {
        "format": FORMAT,
        "encoder": to_dict(model.encoder.cfg),
        "meta": to_dict(model.cfg),
        "extra": extra or {},
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def read_meta_config(directory: str | Path) -> tuple[EncoderConfig, MetaConfig, dict[str, Any]]:
    """The encoder config, meta config and ``extra`` dict stored in a checkpoint directory.

    Raises:
        InputError: if the directory is not an xmeta meta-checkpoint or its config is invalid.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"not an xmeta meta-checkpoint (no {CONFIG_FILE}): {directory}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: invalid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(
            f"{path}: unknown checkpoint format {data.get('format') if isinstance(data, dict) else None!r}"
        )
    try:
        enc_cfg = from_dict(EncoderConfig, data["encoder"], prefix="encoder.")
        meta_cfg = from_dict(MetaConfig, data["meta"], prefix="meta.")
    except (ConfigError, KeyError) as err:
        raise InputError(f"{path}: {err}") from None
    return enc_cfg, meta_cfg, dict(data.get("extra") or {})


def load_meta_model(directory: str | Path, *, encoder: Encoder | None = None) -> MetaModel:
    """Rebuild a ``MetaModel`` from a checkpoint.

    Args:
        directory: written by ``save_meta_model``.
        encoder: an already built encoder to use (it must have the same adapter layout); by
            default one is built from the stored ``EncoderConfig`` (model via the zoo).

    Raises:
        InputError: on a missing/invalid checkpoint or tensors that do not fit the model.
    """
    enc_cfg, meta_cfg, _ = read_meta_config(directory)
    if encoder is None:
        encoder = Encoder.from_config(enc_cfg)
    model = MetaModel(encoder, meta_cfg)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(f"checkpoint has no {WEIGHTS_FILE}: {directory}")
    state = load_file(str(weights), device=str(encoder.device))
    try:
        model.load_meta_state_dict(state)
    except ValueError as err:
        raise InputError(f"{weights}: {err}") from None
    return model
