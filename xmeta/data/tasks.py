"""Corpora by name: ``load_task("sib200", langs=[...])`` -> one ``datasets.Dataset``.

Tasks are registered in :data:`TASKS` (``sib200``, ``afrisenti``, ``files``); an unknown name gets
a did-you-mean error. Each loader takes ``(data_dir, langs, splits, **options)`` and returns a
dataset in the schema of :mod:`xmeta.data.schema`.

Data directory resolution (local corpora): the ``data_dir`` argument, else the environment variable
``XMETA_DATA_DIR``; either names the directory that *contains* ``sib200/`` and ``afrisenti/``
(pointing straight at a corpus directory works too).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmeta.data.cache import cached_dataset, fingerprint
from xmeta.data.readers import Row, close_hint, read_rows
from xmeta.data.schema import RecordBuilder, normalize_splits
from xmeta.errors import InputError
from xmeta.registry import Registry

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

DATA_DIR_ENV = "XMETA_DATA_DIR"
# Below this many bytes of source files a parse takes milliseconds: caching it would only add
# one cache entry per language selection.
CACHE_MIN_BYTES = 2_000_000

TaskLoader = Callable[..., Any]  # (data_dir, langs, splits, **options) -> datasets.Dataset
TASKS: Registry[TaskLoader] = Registry("task")

# Modules whose import registers the built-in tasks; imported on first use so that
# `import xmeta.data.tasks` stays cheap and the registry has no import cycle.
_BUILTIN_TASK_MODULES = ("xmeta.data.sib200", "xmeta.data.afrisenti", "xmeta.data.files")


def _ensure_builtin_tasks() -> None:
    for module in _BUILTIN_TASK_MODULES:
        importlib.import_module(module)


def task_names() -> list[str]:
    """Names of all registered tasks."""
    _ensure_builtin_tasks()
    return TASKS.names()


def load_task(
    name: str,
    data_dir: str | Path | None = None,
    langs: str | Sequence[str] | None = None,
    splits: str | Sequence[str] | None = None,
    **options: Any,
) -> Dataset:
    """Load a registered corpus as one ``datasets.Dataset``.

    Args:
        name: task name, e.g. ``"sib200"``, ``"afrisenti"``, ``"files"``.
        data_dir: directory holding the corpora (default: ``$XMETA_DATA_DIR``).
        langs: languages to keep (``None``: all); a comma-separated string works too.
        splits: splits to keep among ``train``/``dev``/``test`` (``validation`` is an alias of ``dev``).
        **options: task-specific options (e.g. ``source="hub"`` for SIB-200, ``files=[...]`` for files).

    Returns:
        A dataset with columns ``uid, text, label, label_name, lang, split`` (+ ``source_id`` for
        parallel corpora).

    Raises:
        UnknownNameError: unknown task name (with suggestions).
        InputError: missing data, unknown language, malformed files.
    """
    _ensure_builtin_tasks()
    loader = TASKS.get(name)
    if isinstance(langs, str):
        langs = [lang.strip() for lang in langs.split(",") if lang.strip()]
    return loader(data_dir=data_dir, langs=langs, splits=normalize_splits(splits), **options)


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The explicit ``data_dir``, else ``$XMETA_DATA_DIR``, else ``None`` (no local data configured)."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    return Path(data_dir).expanduser() if data_dir is not None else None


def select_langs(task: str, available: Sequence[str], wanted: Sequence[str] | None, where: Path | str) -> list[str]:
    """Check requested languages against the available ones (``None``: all).

    Raises:
        InputError: naming the language that is not present, with close matches.
    """
    if wanted is None:
        return sorted(available)
    present = set(available)
    for lang in wanted:
        if lang not in present:
            raise InputError(
                f"language {lang!r} is not present in {task} at {where} ({len(present)} languages).{close_hint(lang, sorted(present))}"
            )
    return list(dict.fromkeys(wanted))


@dataclass(frozen=True)
class CorpusFile:
    """One file of a local corpus and the language and split its rows belong to."""

    path: Path
    lang: str
    split: str


def add_file_rows(
    builder: RecordBuilder,
    file: CorpusFile,
    rows: Sequence[Row],
    *,
    text_column: str,
    label_column: str,
    key_column: str | None = None,
    skip_bad_rows: bool = False,
) -> int:
    """Validate rows (``values`` = text, label[, key]) and add them to ``builder``; returns rows added.

    Keys default to the 0-based data-row index, which is stable for an unchanged file.

    Raises:
        InputError: empty text, unknown label, empty or duplicate key, naming file, line, column
            and value; unless ``skip_bad_rows``, which skips such rows and logs how many.
    """
    seen: dict[str, int] = {}
    bad: list[str] = []
    added = 0
    for i, row in enumerate(rows):
        text, label = row.values[0], row.values[1]
        key = row.values[2].strip() if key_column else str(i)
        problem = None
        if not text.strip():
            problem = f"{file.path}:{row.line}: empty text in column {text_column!r}"
        elif builder.label_id(label.strip()) is None:
            problem = (
                f"{file.path}:{row.line}: unknown label {label!r} in column {label_column!r} "
                f"(known: {', '.join(builder.label_names)})"
            )
        elif key_column and not key:
            problem = f"{file.path}:{row.line}: empty id in column {key_column!r}"
        elif key in seen:
            problem = (
                f"{file.path}:{row.line}: duplicate id {key!r} in column {key_column!r} (first on line {seen[key]})"
            )
        if problem:
            if not skip_bad_rows:
                raise InputError(problem)
            bad.append(problem)
            continue
        seen[key] = row.line
        source_id = f"{builder.task}:{key}" if builder.parallel else None
        builder.add(lang=file.lang, split=file.split, key=key, text=text, label_name=label.strip(), source_id=source_id)
        added += 1
    if bad:
        log.warning("%s: skipped %d bad row(s); first: %s", file.path, len(bad), bad[0])
    return added


def build_corpus(
    task: str,
    files: Sequence[CorpusFile],
    label_names: Sequence[str],
    *,
    text_column: str,
    label_column: str,
    key_column: str | None = None,
    parallel: bool = False,
    fmt: str | None = None,
    skip_bad_rows: bool = False,
    cache: bool = True,
) -> Dataset:
    """Parse ``files`` into one dataset (through the Arrow cache unless ``cache=False``)."""
    for f in files:
        if not f.path.is_file():
            raise InputError(f"{f.path}: file not found ({task}, language {f.lang!r}, split {f.split!r})")
    columns = [text_column, label_column] + ([key_column] if key_column else [])
    options = {
        "labels": list(label_names),
        "columns": columns,
        "parallel": parallel,
        "fmt": fmt,
        "skip": skip_bad_rows,
        "layout": [(str(f.path.resolve()), f.lang, f.split) for f in files],
    }

    def build() -> Dataset:
        start = time.perf_counter()
        builder = RecordBuilder(task, label_names, parallel)
        for f in files:
            rows = read_rows(f.path, columns, fmt=fmt)  # type: ignore[arg-type]
            n = add_file_rows(
                builder,
                f,
                rows,
                text_column=text_column,
                label_column=label_column,
                key_column=key_column,
                skip_bad_rows=skip_bad_rows,
            )
            if n == 0:
                log.info("%s: %s/%s has no rows (%s)", task, f.lang, f.split, f.path)
        ds = builder.to_dataset()
        langs = {f.lang for f in files}
        log.info(
            "%s: parsed %d files (%d languages) into %d rows in %.2fs",
            task,
            len(files),
            len(langs),
            len(ds),
            time.perf_counter() - start,
        )
        return ds

    if sum(f.path.stat().st_size for f in files) < CACHE_MIN_BYTES:
        cache = False
    key = fingerprint(task, [f.path for f in files], options) if cache else ""
    return cached_dataset(task, key, build, enabled=cache)
