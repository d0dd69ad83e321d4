"""Data layer: corpora -> ``datasets.Dataset``; language metadata; episodes.

The names below are imported lazily (PEP 562), so ``import xmeta.data`` does not pull in
``datasets``/``torch`` until one of them is used.

* corpora: :func:`load_task`, :func:`task_names`, :data:`TASKS`, :func:`load_files`, :class:`FileSpec`
* languages: :func:`language_info`, :func:`tier_of`, :func:`high_resource_languages`, :func:`languages_in_tier`
* episodes: :class:`EpisodeSampler`, :func:`episode_to_dict`, :func:`episode_from_dict`,
  :func:`save_episodes`, :func:`load_episodes`, :func:`check_leakage`, :class:`LeakageError`,
  :class:`InsufficientExamplesError`
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TASKS": "xmeta.data.tasks",
    "load_task": "xmeta.data.tasks",
    "task_names": "xmeta.data.tasks",
    "resolve_data_dir": "xmeta.data.tasks",
    "load_files": "xmeta.data.files",
    "FileSpec": "xmeta.data.files",
    "Language": "xmeta.data.languages",
    "language_info": "xmeta.data.languages",
    "tier_of": "xmeta.data.languages",
    "languages_in_tier": "xmeta.data.languages",
    "high_resource_languages": "xmeta.data.languages",
    "EpisodeSampler": "xmeta.data.episodes",
    "InsufficientExamplesError": "xmeta.data.episodes",
    "episode_to_dict": "xmeta.data.episode_io",
    "episode_from_dict": "xmeta.data.episode_io",
    "save_episodes": "xmeta.data.episode_io",
    "load_episodes": "xmeta.data.episode_io",
    "check_leakage": "xmeta.data.leakage",
    "find_leaks": "xmeta.data.leakage",
    "LeakageError": "xmeta.data.leakage",
    "COLUMNS": "xmeta.data.schema",
    "select_rows": "xmeta.data.schema",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xmeta.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
