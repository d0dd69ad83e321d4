"""What the benchmark needs to know about a meta-training run, read without loading a model.

``meta:<dir>`` names either a meta checkpoint (a directory with ``xmeta_meta.json``, written by
``xmeta.meta.save_meta_model``) or a run directory holding one (itself, or a ``final``/``best``
sub-directory, or a single sub-directory that has one). The algorithm comes from the
checkpoint's ``meta.algorithm``. The data meta-training saw (for the leakage check) comes from
the first of: the checkpoint's ``extra``, then a resolved run config (``config.json`` /
``config.yaml``) in the checkpoint directory or the run directory; keys are found at any depth:
``task``, ``train_langs``, ``train_split`` (default ``train``), ``val_langs`` and
``val_split`` (default ``dev``). Reading this is cheap on purpose: it happens for every ``meta:``
method before any model loads, and a run whose training data cannot be found is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xmeta.errors import InputError

CHECKPOINT_CONFIG = "xmeta_meta.json"  # xmeta.meta.checkpoint.CONFIG_FILE (not imported: that pulls torch)
RUN_CONFIGS = ("config.json", "config.yaml", "config.yml", "resolved_config.yaml")
PREFERRED_SUBDIRS = ("final", "best")  # final/ is the artifact a training run publishes
DEFAULT_ENV = "XMETA_META_DEFAULT"


@dataclass(frozen=True)
class TrainingData:
    """The examples a meta-trained model has seen: ``{lang: splits}`` of one task."""

    task: str
    splits_by_lang: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "splits_by_lang": {k: list(v) for k, v in self.splits_by_lang.items()}}


@dataclass(frozen=True)
class MetaRun:
    """A meta checkpoint and what its configs say."""

    checkpoint: Path
    algorithm: str
    training: TrainingData


def default_run_dir() -> Path:
    """Where ``meta:default`` lives: ``$XMETA_META_DEFAULT``, else the adapter shipped in ``xmeta/assets/default``."""
    from xmeta.adaptation.source import default_model_dir

    return default_model_dir()


def resolve_run_dir(arg: str) -> Path:
    """The directory of ``meta:<arg>`` (``default`` is looked up, anything else is a path)."""
    return default_run_dir() if arg == "default" else Path(arg).expanduser()


def find_checkpoint(run_dir: Path) -> Path:
    """The meta checkpoint directory inside (or at) ``run_dir``.

    Raises:
        InputError: Missing directory, no checkpoint, or several with none preferred.
    """
    if not run_dir.is_dir():
        hint = f" (meta-train one there or set ${DEFAULT_ENV})" if run_dir == default_run_dir() else ""
        raise InputError(f"meta run directory not found: {run_dir}{hint}")
    if (run_dir / CHECKPOINT_CONFIG).is_file():
        return run_dir
    for name in PREFERRED_SUBDIRS:
        if (run_dir / name / CHECKPOINT_CONFIG).is_file():
            return run_dir / name
    found = sorted(p.parent for p in run_dir.glob(f"*/{CHECKPOINT_CONFIG}"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError(f"{run_dir}: no meta checkpoint ({CHECKPOINT_CONFIG}) here or in a sub-directory")
    names = ", ".join(p.name for p in found)
    raise InputError(f"{run_dir}: several meta checkpoints ({names}); name one with meta:<dir>/<checkpoint>")


def _find(data: Any, key: str) -> Any:
    """The value of the shallowest ``key`` in nested mappings (breadth first), else None."""
    level = [data]
    while level:
        nxt = []
        for node in level:
            if isinstance(node, Mapping):
                if node.get(key) is not None:
                    return node[key]
                nxt.extend(v for v in node.values() if isinstance(v, Mapping))
        level = nxt
    return None


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Sequence):
        return [str(v) for v in value]
    raise InputError(f"expected a list of names, got {value!r}")


def training_data_of(cfg: Mapping[str, Any]) -> TrainingData | None:
    """Task, languages and splits that training and meta-validation used, or None if not stated."""
    task = _find(cfg, "task")
    # Only an explicit train_langs counts: a generic "langs" key may well be the evaluation languages.
    train = _names(_find(cfg, "train_langs"))
    if not task or not train:
        return None
    splits: dict[str, set[str]] = {}
    for lang in train:
        splits.setdefault(lang, set()).update(_names(_find(cfg, "train_split") or "train"))
    for lang in _names(_find(cfg, "val_langs")):
        splits.setdefault(lang, set()).update(_names(_find(cfg, "val_split") or "dev"))
    return TrainingData(str(task), {lang: tuple(sorted(s)) for lang, s in splits.items()})


def _read(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise InputError(f"{path}: cannot read: {err}") from None
    if not isinstance(data, Mapping):
        raise InputError(f"{path}: expected a mapping at the top level")
    return data


def read_meta_run(arg: str) -> MetaRun:
    """Read ``meta:<arg>``'s checkpoint config and training data (no model is loaded).

    Raises:
        InputError: No checkpoint, unreadable config, no algorithm, or no training data stated.
    """
    run_dir = resolve_run_dir(arg)
    ckpt = find_checkpoint(run_dir)
    ckpt_cfg = _read(ckpt / CHECKPOINT_CONFIG)
    meta = ckpt_cfg.get("meta")
    algorithm = meta.get("algorithm") if isinstance(meta, Mapping) else None
    if not algorithm:
        raise InputError(f"{ckpt / CHECKPOINT_CONFIG}: names no meta.algorithm")
    sources = [ckpt_cfg.get("extra") or {}]
    for folder in dict.fromkeys((ckpt, run_dir, ckpt.parent)):
        sources += [_read(folder / name) for name in RUN_CONFIGS if (folder / name).is_file()]
    for source in sources:
        training = training_data_of(source)
        if training is not None:
            return MetaRun(ckpt, str(algorithm), training)
    raise InputError(
        f"{run_dir}: cannot find the data meta-training used (task and train_langs) in the checkpoint's "
        f"'extra' or a run config ({', '.join(RUN_CONFIGS)}); without it no leakage check is possible"
    )
