"""What the benchmark needs to know about a meta-trained model, read without loading it.

``meta:<x>`` names anything ``xmeta.artifacts.resolve`` understands (``default``, a run directory,
its ``final/`` or ``best/``, a checkpoint). The algorithm comes from the manifest's meta config and
the data meta-training read from the artifact's ``training_data.json`` (row and sentence ids), so
the leakage check needs only the evaluation languages in the data directory. An artifact of the
format before xmeta/2 records only task and languages; those splits are then re-read from the data
directory. Reading this is cheap on purpose: it happens for every ``meta:`` method before any model
loads, and a model whose training data is unknown is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xmeta.artifacts import ArtifactError, TrainingData, open_artifact
from xmeta.artifacts.training_data import training_data_of


@dataclass(frozen=True)
class MetaRun:
    """A verified meta-trained artifact and what it was trained on."""

    checkpoint: Path
    algorithm: str
    training: TrainingData


def read_meta_run(arg: str) -> MetaRun:
    """Resolve and verify ``meta:<arg>``; read its algorithm and training data (no model is loaded).

    Raises:
        ArtifactError: nothing there, a corrupt artifact, no algorithm, or no training data recorded.
    """
    manifest = open_artifact(arg or "default", "meta")
    algorithm = manifest.meta.get("algorithm")
    if not algorithm:
        raise ArtifactError(f"{manifest.root}: its manifest names no meta.algorithm")
    training = training_data_of(manifest)
    if training is None:
        raise ArtifactError(
            f"{manifest.root}: records no training data (task and languages); without it no leakage check is "
            "possible. Re-create it with `xmeta train`, or run `xmeta artifacts migrate` on an old run"
        )
    return MetaRun(manifest.root, str(algorithm), training)
