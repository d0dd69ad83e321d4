"""An Arrow cache of parsed corpora, keyed by a fingerprint of the source files.

Parsing all of SIB-200 (552 files, ~185k rows) takes about a second or two; reading it back from
the cache is a memory map and takes milliseconds. The key covers each file's path, size and
modification time plus the loader's options and :data:`CACHE_VERSION`, so editing a file,
changing a label set, or changing the parsing code (bump the version) never serves stale rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

# Bump when the parsing or the record schema changes: old cache entries then simply stop matching.
CACHE_VERSION = 1


def cache_root() -> Path:
    """``$XMETA_CACHE/data`` if ``XMETA_CACHE`` is set, else ``~/.cache/xmeta/data``."""
    base = os.environ.get("XMETA_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "xmeta") / "data"


def fingerprint(task: str, files: Iterable[Path], options: Mapping[str, Any] | None = None) -> str:
    """A short hash of the files' resolved paths, sizes and mtimes plus the options."""
    entries = []
    for path in files:
        st = path.stat()
        entries.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    payload = json.dumps(
        {"version": CACHE_VERSION, "task": task, "files": sorted(entries), "options": options or {}},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence datasets' progress bars for sub-second steps (saving, flattening) and restore them after."""
    from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def cached_dataset(task: str, key: str, build: Callable[[], Dataset], enabled: bool = True) -> Dataset:
    """Return the dataset cached under ``key``, or ``build()`` it and cache it.

    The cache is written to a temporary directory and renamed into place, so a reader in another
    process never sees a half-written entry and two writers racing just both produce the same one.
    A cache that cannot be read or written is logged and bypassed, never fatal.
    """
    from datasets import load_from_disk

    if not enabled:
        return build()
    target = cache_root() / f"{task}-{key}"
    if target.is_dir():
        try:
            start = time.perf_counter()
            ds = load_from_disk(str(target))
            log.debug("%s: loaded %d rows from cache %s in %.2fs", task, len(ds), target, time.perf_counter() - start)
            return ds
        except Exception as err:  # a corrupt or foreign-version entry: rebuild rather than fail
            log.warning("%s: ignoring unreadable cache %s (%s)", task, target, err)
    ds = build()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        with quiet_progress():
            ds.save_to_disk(str(tmp))
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; its entry is identical
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("%s: cached %d rows at %s", task, len(ds), target)
        # Serve the memory-mapped copy so repeated runs and this one behave the same.
        return load_from_disk(str(target))
    except OSError as err:
        log.warning("%s: could not write the cache under %s (%s); continuing without it", task, target.parent, err)
        return ds
