"""Rewrite artifacts of the format before xmeta/2 (``xmeta artifacts migrate``).

A meta artifact gains digests, ``training_data.json`` (the ids of the rows its recorded task and
languages hold: the train split of every training language, the dev split of every validation
language, read from the data directory), peft's own export in ``adapter/`` (the old one had the
wrong module names, so peft loaded none of its tensors) and a card with Hub front matter; an
adapted model is loaded and saved again. Tensors are copied bit for bit; the rewrite is atomic.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xmeta.artifacts import CARD, Manifest, TrainingData, read_manifest
from xmeta.artifacts.training_data import training_data_of

logger = logging.getLogger(__name__)

SUMMARY = "training.json"  # a run's config and final state, kept as is


def recorded_training(manifest: Manifest, data_dir: str | None) -> TrainingData | None:
    """The ids of what an old run's recorded task and languages hold (None if it recorded none)."""
    from xmeta.data import load_task
    from xmeta.data.leakage import records

    summary = training_data_of(manifest)
    if summary is None or summary.has_ids:
        return summary
    rows = []
    by_splits: dict[tuple[str, ...], list[str]] = {}
    for lang, splits in summary.splits_by_lang.items():
        by_splits.setdefault(tuple(splits), []).append(lang)
    for splits, langs in by_splits.items():
        rows += records(load_task(summary.task, data_dir, langs=langs, splits=list(splits)), "train")
    return TrainingData.from_records(summary.task, rows)


def migrate(directory: str | Path, *, data_dir: str | None = None) -> tuple[Path, str]:
    """Rewrite ``directory`` in the current format; returns it and what was done.

    Raises:
        ArtifactError: not an artifact, or tensors that do not fit their configs.
    """
    manifest = read_manifest(directory)
    root = Path(directory)
    if not manifest.legacy:
        return root, f"already {manifest.format}"
    if manifest.kind == "adapted":
        from xmeta.adaptation.predictor import AdaptedPredictor

        AdaptedPredictor.load(root).save(root)
        return root, f"migrated {manifest.legacy} -> xmeta/2 (adapted)"
    from xmeta.meta.checkpoint import load_meta_model

    model = load_meta_model(manifest)
    training = recorded_training(manifest, data_dir)
    card = (root / CARD).read_text(encoding="utf-8") if (root / CARD).is_file() else None
    if card is not None:  # the old body, without its one-line usage (the new card has a full section)
        from xmeta.meta.checkpoint import usage

        body = "\n".join(line for line in card.splitlines() if not line.startswith("Load it with `xmeta adapt"))
        card = body.rstrip() + "\n\n" + usage(manifest)
    extra = {}
    if (root / SUMMARY).is_file():
        text = (root / SUMMARY).read_text(encoding="utf-8")
        extra[SUMMARY] = lambda p: p.write_text(text, encoding="utf-8")
    from xmeta.meta.checkpoint import save_meta_model

    info = {k: v for k, v in manifest.info.items() if k not in ("created",)}
    save_meta_model(model, root, training=training, step=manifest.step, val_acc=manifest.val_acc, info=info,
                    card=card, extra_files=extra)  # fmt: skip
    rows = sum(len(r) for r in training.groups.values()) if training else 0
    return root, f"migrated {manifest.legacy} -> xmeta/2 (meta; {rows} training rows recorded)"


__all__ = ["migrate", "recorded_training"]
