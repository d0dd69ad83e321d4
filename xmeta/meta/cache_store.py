"""Activation caches on disk: saved once, verified on every load, reused by later runs.

An ``ActivationCache`` (``xmeta.meta.cache``) holds the frozen layers' output per example; its
values depend on the frozen weights, the tokenizer settings, the adapter cut, the storage dtype,
the fill precision and tiles, and the examples. ``activation_cache_key`` names all of these;
``save_activation_cache`` writes the rows, the index and a manifest (the key, every file's size
and sha256) atomically; ``load_activation_cache`` refuses a store whose key or files differ.
``prebuild_activation_cache`` is what a run calls::

    with torch.autocast(...):  # the run's own precision: the fill's values depend on it
        cache = prebuild_activation_cache(encoder, sampler.pool_examples(), "caches/")

It fills the cache over every example the run can draw and saves it under
``caches/<layer>-<dtype>-<key digest>/``, or loads that directory when an earlier run on the same
encoder and data wrote it. The tiled fill makes values independent of the grouping, so a run on a
pre-built cache trains bitwise as one that fills as it goes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from xmeta.artifacts.manifest import file_digest
from xmeta.artifacts.store import atomic_directory
from xmeta.errors import InputError
from xmeta.interfaces import Example
from xmeta.meta.cache import FILL_WIDTH_STEP, ActivationCache, autocast_precision, text_crc
from xmeta.models.encoder import Encoder

logger = logging.getLogger(__name__)

CACHE_MANIFEST = "activation_cache.json"
CACHE_FORMAT = "xmeta-activation-cache/1"
_ROWS, _INDEX = "activations.bin", "index.json"
_FILES = (_ROWS, _INDEX)
# Per cache: hashing the frozen weights takes ~1 s on e5-small, and they never change under a cache
# (what the cache relies on).
_FROZEN_SHA256: weakref.WeakKeyDictionary[ActivationCache, str] = weakref.WeakKeyDictionary()


class ActivationCacheError(InputError):
    """A stored activation cache that does not match what it is asked for, or is corrupt."""


def activation_cache_key(cache: ActivationCache, examples: Sequence[Example] | None = None) -> dict[str, object]:
    """What ``cache``'s values depend on; ``examples`` give the data fingerprint (default: those held)."""
    if examples is None:
        data = _data_digest((uid, crc) for uid, (_, _, crc) in cache.contents()[1].items())
    else:
        data = _data_digest((e.uid, text_crc(e.text)) for e in {e.uid: e for e in examples}.values())
    if cache not in _FROZEN_SHA256:
        _FROZEN_SHA256[cache] = frozen_digest(cache.encoder, cache.layer)
    enc, tok = cache.encoder, cache.encoder.tokenizer
    return {"format": CACHE_FORMAT, "model": str(enc.cfg.model), "frozen_sha256": _FROZEN_SHA256[cache],
            "tokenizer": [type(tok).__name__, str(getattr(tok, "name_or_path", "")), len(tok)],
            "text_prefix": enc.cfg.text_prefix, "max_length": enc.cfg.max_length, "layer": cache.layer,
            "hidden_size": enc.hidden_size, "dtype": _dtype_name(cache.dtype),
            "precision": cache.fill_precision or autocast_precision(enc.device.type),
            "fill": {"batch_tokens": cache.fill_batch_tokens, "width_step": FILL_WIDTH_STEP},
            "data_sha256": data}  # fmt: skip


def save_activation_cache(cache: ActivationCache, directory: str | os.PathLike[str]) -> Path:
    """Write ``cache`` to ``directory`` atomically: rows, index, then a manifest with every file's
    size and sha256 and the key; a reader sees the old directory or the new one, never a mix.

    Raises:
        ActivationCacheError: ``directory`` holds something else than an activation cache.
        WriteError: the disk is full or the write is refused.
    """
    out = Path(directory)
    if out.exists() and not (out / CACHE_MANIFEST).is_file() and any(out.iterdir()):
        raise ActivationCacheError(f"{out}: exists and is not an activation cache; choose a new or empty directory")
    rows, index = cache.contents()
    with atomic_directory(out) as tmp:
        rows.contiguous().view(torch.uint8).numpy().tofile(tmp / _ROWS)  # raw rows, any dtype
        entries = [[uid, first, n, crc] for uid, (first, n, crc) in index.items()]
        (tmp / _INDEX).write_text(json.dumps(entries), encoding="utf-8")
        files = {n: {"bytes": (tmp / n).stat().st_size, "sha256": file_digest(tmp / n)} for n in _FILES}
        manifest = {"key": activation_cache_key(cache), "examples": len(index), "tokens": rows.shape[0],
                    "files": files}  # fmt: skip
        (tmp / CACHE_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return out


def load_activation_cache(directory: str | os.PathLike[str], encoder: Encoder, **kwargs: object) -> ActivationCache:
    """A cache written by ``save_activation_cache``, verified against ``encoder``, the current
    autocast and ``kwargs`` (``ActivationCache`` arguments) before any value is used. Rows are
    memory-mapped past ``memory_limit_mb``, copy-on-write: the stored files are never changed.

    Raises:
        ActivationCacheError: a missing, truncated or altered file, or a key that differs
            (another encoder, adapter cut, dtype, fill precision or tiles), naming the field.
    """
    return _load(Path(directory), ActivationCache(encoder, **kwargs))  # type: ignore[arg-type]


def _load(root: Path, cache: ActivationCache) -> ActivationCache:
    try:
        manifest = json.loads((root / CACHE_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ActivationCacheError(f"{root / CACHE_MANIFEST}: unreadable activation cache manifest ({err})") from None
    stored = manifest.get("key", {})
    want = activation_cache_key(cache)  # the current autocast stands for the fill precision: they must match
    want["data_sha256"] = stored.get("data_sha256")  # any examples: a caller compares them if it cares
    diff = sorted(k for k in set(want) | set(stored) if want.get(k) != stored.get(k))
    if diff:
        detail = "; ".join(f"{k}: stored {stored.get(k)!r}, expected {want.get(k)!r}" for k in diff)
        raise ActivationCacheError(f"{root}: activation cache built for other settings ({detail})")
    for name in _FILES:
        path, entry = root / name, manifest.get("files", {}).get(name, {})
        if not path.is_file() or path.stat().st_size != entry.get("bytes") or file_digest(path) != entry.get("sha256"):
            raise ActivationCacheError(f"{path}: missing, truncated or altered (size/sha256 differ from "
                                       f"{root / CACHE_MANIFEST}); delete {root} to rebuild it")  # fmt: skip
    index = {uid: (first, n, crc) for uid, first, n, crc in json.loads((root / _INDEX).read_text(encoding="utf-8"))}
    cache.attach_stored(root / _ROWS, int(manifest["tokens"]), index, stored.get("precision"))
    return cache


def prebuild_activation_cache(
    encoder: Encoder,
    examples: Sequence[Example],
    cache_dir: str | os.PathLike[str],
    *,
    write: bool = True,
    **kwargs: object,
) -> ActivationCache:
    """The activation cache of ``examples``, loaded from ``cache_dir`` when a run with the same key
    built it before, else filled (under the caller's autocast) and, if ``write``, saved there.

    The store is ``cache_dir/layer<L>-<dtype>-<key digest>/``. A stored cache that fails
    verification (corrupt, or built for other settings) is rebuilt with a warning, never used.
    In a multi-process run only one process should ``write`` (the others load after it).
    ``kwargs`` go to ``ActivationCache``.
    """
    fresh = ActivationCache(encoder, **kwargs)  # type: ignore[arg-type]
    key = activation_cache_key(fresh, examples)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_dir) / f"layer{fresh.layer}-{_dtype_name(fresh.dtype)}-{digest}"
    if (root / CACHE_MANIFEST).is_file():
        try:
            stored = ActivationCache(encoder, **kwargs)  # type: ignore[arg-type]
            _FROZEN_SHA256[stored] = _FROZEN_SHA256[fresh]  # same encoder and layers, moments apart
            cache = _load(root, stored)
            if activation_cache_key(cache)["data_sha256"] != key["data_sha256"]:
                raise ActivationCacheError(f"{root}: holds other examples than asked for")
            logger.info("activation cache: reusing %s (%d examples)", root, len(cache))
            return cache
        except ActivationCacheError as err:
            logger.warning("%s; rebuilding it", err)
    fresh.fill(examples)
    if write:
        save_activation_cache(fresh, root)
        logger.info("activation cache: %d examples filled in %.1fs, saved to %s", len(fresh), fresh.fill_seconds, root)
    else:
        logger.warning("activation cache: %s has no valid store and this process does not write; filled in memory",
                       root)  # fmt: skip
    return fresh


def frozen_digest(encoder: Encoder, layer: int) -> str:
    """sha256 of the tensors the cached values depend on: the embeddings and the layers below ``layer``."""
    h = hashlib.sha256()
    modules = [("embeddings", encoder.backbone.embeddings)]
    modules += [(f"layer.{i}", m) for i, m in enumerate(encoder.backbone.encoder.layer[:layer])]
    for prefix, module in modules:
        for name, t in sorted({**dict(module.named_parameters()), **dict(module.named_buffers())}.items()):
            t = t.detach().to("cpu").contiguous()
            h.update(f"{prefix}.{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
            h.update(t.view(-1).view(torch.uint8).numpy())  # the buffer itself: no copy
    return h.hexdigest()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _data_digest(pairs: Iterable[tuple[str, int]]) -> str:
    """sha256 of the (uid, crc32 of text) pairs, in uid order."""
    h = hashlib.sha256()
    for uid, crc in sorted(pairs):
        h.update(f"{uid}\t{crc}\n".encode())
    return h.hexdigest()
