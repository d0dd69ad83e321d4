"""xmeta's artifacts, torch-free: one manifest format, one resolver, one atomic writer, verified loads.

See :mod:`xmeta.artifacts.manifest` for the layout and kinds, :mod:`xmeta.artifacts.store` for how
names resolve and how artifacts are written, :mod:`xmeta.artifacts.training_data` for the record
the leakage check reads, and :mod:`xmeta.artifacts.card` for model cards and ``push_to_hub``.
"""

from xmeta.artifacts.card import base_model_of, front_matter, push_to_hub, read_front_matter
from xmeta.artifacts.manifest import (
    ADAPTER_DIR,
    CARD,
    FORMAT,
    MANIFEST,
    PARAMS,
    TRAINING_DATA,
    ArtifactError,
    FileEntry,
    Manifest,
    file_digest,
    has_manifest,
    read_manifest,
    verify,
)
from xmeta.artifacts.store import SHIPPED_DEFAULT, copy_writers, default_dir, open_artifact, resolve, write_artifact
from xmeta.artifacts.training_data import TrainingData

__all__ = [
    "ADAPTER_DIR",
    "CARD",
    "FORMAT",
    "MANIFEST",
    "PARAMS",
    "SHIPPED_DEFAULT",
    "TRAINING_DATA",
    "ArtifactError",
    "FileEntry",
    "Manifest",
    "TrainingData",
    "base_model_of",
    "copy_writers",
    "default_dir",
    "file_digest",
    "front_matter",
    "has_manifest",
    "open_artifact",
    "push_to_hub",
    "read_front_matter",
    "read_manifest",
    "resolve",
    "verify",
    "write_artifact",
]
