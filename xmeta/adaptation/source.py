"""Where ``xmeta adapt`` gets its meta-trained model: ``default`` or a meta-training run directory.

``default`` is the adapter shipped inside the package at ``xmeta/assets/default/`` (a meta-run's
``final/`` directory), unless ``$XMETA_META_DEFAULT`` names another directory: the same variable
``xmeta bench`` reads for ``meta:default``, so one setting points both at the same model.

A run directory is a meta checkpoint (``xmeta_meta.json`` + ``meta_params.safetensors``, written
by ``xmeta.meta.save_meta_model``) or a directory holding one in ``final/`` or ``best/``.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmeta.errors import InputError

if TYPE_CHECKING:
    from xmeta.meta.model import MetaModel
    from xmeta.models.encoder import Encoder

logger = logging.getLogger(__name__)

DEFAULT_ENV = "XMETA_META_DEFAULT"
META_CONFIG = "xmeta_meta.json"  # xmeta.meta.checkpoint.CONFIG_FILE (not imported: that pulls torch)
ADAPTED_CONFIG = "xmeta_adapted.json"
RUN_SUBDIRS = ("final", "best")
SHIPPED_DEFAULT: Path = Path(str(importlib.resources.files("xmeta") / "assets" / "default"))


@dataclass
class MetaSource:
    """A loaded meta-trained model and where it came from (recorded in the adapted artifact)."""

    model: MetaModel
    info: dict[str, Any] = field(default_factory=dict)


def default_model_dir() -> Path:
    """``$XMETA_META_DEFAULT`` if set, else the adapter shipped at ``xmeta/assets/default``."""
    env = os.environ.get(DEFAULT_ENV)
    return Path(env).expanduser() if env else SHIPPED_DEFAULT


def resolve_checkpoint(model: str | Path) -> Path:
    """The meta checkpoint directory for ``model`` (``"default"`` or a run/checkpoint directory).

    Raises:
        InputError: the default is not shipped, the directory is missing, holds an adapted model
            (not a meta-run), or holds no meta checkpoint.
    """
    if str(model) == "default":
        root = default_model_dir()
        if not (root / META_CONFIG).is_file() and not any((root / s / META_CONFIG).is_file() for s in RUN_SUBDIRS):
            origin = f"${DEFAULT_ENV}={root}" if os.environ.get(DEFAULT_ENV) else str(root)
            raise InputError(
                f"no default meta-trained adapter is installed (no {META_CONFIG} in {origin}); pass a meta-training "
                "run directory instead, e.g. --model runs/default/final (made by `xmeta train`)"
            )
    else:
        root = Path(model).expanduser()
    if not root.is_dir():
        raise InputError(f"meta-trained model directory not found: {root}")
    if (root / ADAPTED_CONFIG).is_file():
        raise InputError(
            f"{root} is an adapted model (made by `xmeta adapt`), not a meta-training run; use it with "
            "`xmeta predict --model`, or adapt from the run it came from"
        )
    for candidate in (root, *(root / s for s in RUN_SUBDIRS)):
        if (candidate / META_CONFIG).is_file():
            return candidate
    raise InputError(
        f"{root}: not a meta-training run (no {META_CONFIG} here or in {'/ or '.join(RUN_SUBDIRS)}/); "
        "pass the run's output_dir or its final/ directory"
    )


def load_meta(model: str | Path, *, encoder: Encoder | None = None) -> MetaSource:
    """Load the meta-trained model named by ``model`` (see ``resolve_checkpoint``).

    Args:
        model: ``"default"`` or a directory.
        encoder: an already built encoder with the same adapter layout (skips loading the backbone).

    Raises:
        InputError: see ``resolve_checkpoint``; invalid or mismatching checkpoint files.
    """
    from xmeta.meta.checkpoint import load_meta_model, read_meta_config

    ckpt = resolve_checkpoint(model)
    enc_cfg, meta_cfg, extra = read_meta_config(ckpt)
    meta = load_meta_model(ckpt, encoder=encoder)
    if meta.encoder.attn_implementation != enc_cfg.attn_implementation:
        # A second-order run switched to eager attention for training; test-time adaptation is
        # first order, so the faster configured kernel gives the same results.
        meta.encoder.set_attn_implementation(enc_cfg.attn_implementation)
    info = {"model": str(model), "checkpoint": str(ckpt.resolve()), "algorithm": meta_cfg.algorithm}
    for key in ("step", "val_acc"):
        if key in extra:
            info[key] = extra[key]
    card = ckpt / "README.md"
    if card.is_file():
        info["model_card"] = str(card.resolve())
    logger.info("loaded meta-trained model %s (%s)", ckpt, meta_cfg.algorithm)
    return MetaSource(meta, info)
