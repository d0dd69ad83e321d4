"""Where ``xmeta adapt`` gets its meta-trained model: any name ``xmeta.artifacts.resolve`` understands.

``default`` is the model shipped inside the package at ``xmeta/assets/default/`` unless
``$XMETA_META_DEFAULT`` names another directory (the same variable ``xmeta bench`` reads for
``meta:default``); otherwise a run directory, its ``final/`` or ``best/``, or a checkpoint. Every
file is verified against its digest before anything is loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmeta.artifacts import CARD, open_artifact

if TYPE_CHECKING:
    from xmeta.meta.model import MetaModel
    from xmeta.models.encoder import Encoder

logger = logging.getLogger(__name__)


@dataclass
class MetaSource:
    """A loaded meta-trained model and where it came from (recorded in the adapted artifact)."""

    model: MetaModel
    info: dict[str, Any] = field(default_factory=dict)


def load_meta(model: str | Path, *, encoder: Encoder | None = None) -> MetaSource:
    """Load the meta-trained model named by ``model`` (see ``xmeta.artifacts.resolve``).

    Args:
        model: ``"default"`` or a directory.
        encoder: an already built encoder with the same adapter layout (skips loading the backbone).

    Raises:
        ArtifactError: nothing there, an adapted model, or a corrupt or mismatching artifact.
    """
    from xmeta.meta.checkpoint import configs_of, load_meta_model

    manifest = open_artifact(model, "meta")
    _, meta_cfg = configs_of(manifest)
    meta = load_meta_model(manifest, encoder=encoder)
    ckpt = manifest.root
    info = {"model": str(model), "checkpoint": str(ckpt.resolve()), "algorithm": meta_cfg.algorithm}
    info.update({k: v for k, v in (("step", manifest.step), ("val_acc", manifest.val_acc)) if v is not None})
    if (ckpt / CARD).is_file():
        info["model_card"] = str((ckpt / CARD).resolve())
    logger.info("loaded meta-trained model %s (%s)", ckpt, meta_cfg.algorithm)
    return MetaSource(meta, info)
