"""Finding, opening and writing artifacts: one resolver, one verified open, one atomic writer.

How a user names a meta-trained model (``xmeta adapt --model``, ``xmeta bench --methods meta:<x>``,
``eval/soup.py``), resolved the same way everywhere by :func:`resolve`:

- ``default``: ``$XMETA_META_DEFAULT`` if set, else the model shipped at ``xmeta/assets/default``;
- an artifact directory (``<run>/final``, ``<run>/best``, a soup, a checkpoint ``<run>/checkpoints/step-N``);
- a run directory: its ``final/``, else ``best/``, else its latest checkpoint.

:func:`open_artifact` resolves, reads the manifest and verifies every file's sha256 (milliseconds
for the default adapter) before anything is loaded. This module is torch-free.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from xmeta.artifacts.manifest import (
    LEGACY,
    MANIFEST,
    ArtifactError,
    Manifest,
    describe_files,
    has_manifest,
    read_manifest,
    verify,
)
from xmeta.errors import writing

logger = logging.getLogger(__name__)

DEFAULT_ENV = "XMETA_META_DEFAULT"
RUN_SUBDIRS = ("final", "best")
SHIPPED_DEFAULT: Path = Path(str(importlib.resources.files("xmeta") / "assets" / "default"))
Writer = Callable[[Path], None]


def default_dir() -> Path:
    """``$XMETA_META_DEFAULT`` if set, else the model shipped at ``xmeta/assets/default``."""
    env = os.environ.get(DEFAULT_ENV)
    return Path(env).expanduser() if env else SHIPPED_DEFAULT


def _latest_checkpoint(run: Path) -> Path | None:
    pointer = run / "checkpoints" / "latest"
    if pointer.is_file():
        path = pointer.parent / pointer.read_text(encoding="utf-8").strip()
        return path if has_manifest(path) else None
    return None


def resolve(name: str | os.PathLike[str], kind: str = "meta") -> Path:
    """The artifact directory a user means by ``name`` (see the module doc for the rules).

    Args:
        name: ``"default"`` (meta only) or a directory.
        kind: "meta" (a meta checkpoint also qualifies) or "adapted".

    Raises:
        ArtifactError: nothing there, or an artifact of the other kind (with what to do instead).
    """
    if kind == "meta" and str(name) == "default":
        root = default_dir()
        origin = f"${DEFAULT_ENV}={root}" if os.environ.get(DEFAULT_ENV) else str(root)
        if not root.is_dir():
            raise ArtifactError(
                f"no default meta-trained model is installed (nothing at {origin}); pass a meta-training run "
                "directory instead, e.g. runs/protonet (made by `xmeta train --config protonet`)"
            )
    else:
        root = Path(name).expanduser()
    if not root.is_dir():
        what = "adapted model" if kind == "adapted" else "meta-trained model"
        raise ArtifactError(f"{what} directory not found: {root}")
    if has_manifest(root):
        found = read_manifest(root).kind
        if kind == "adapted" and found != "adapted":
            raise ArtifactError(
                f"{root} is a meta-trained model, not an adapted one; run `xmeta adapt --model {root} --support FILE "
                "--out DIR` first and predict with DIR"
            )
        if kind == "meta" and found == "adapted":
            raise ArtifactError(
                f"{root} is an adapted model (made by `xmeta adapt`), not a meta-trained one; use it with "
                "`xmeta predict --model`, or adapt from the run it came from"
            )
        return root
    if kind == "meta":
        for candidate in (*(root / s for s in RUN_SUBDIRS), _latest_checkpoint(root)):
            if candidate is not None and has_manifest(candidate):
                return candidate
        found = sorted(p for p in root.iterdir() if p.is_dir() and has_manifest(p))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ArtifactError(f"{root}: several meta-trained models ({names}); name one, e.g. {found[0]}")
        raise ArtifactError(
            f"{root}: not a meta-trained model or run (no {MANIFEST} here, in {'/, '.join(RUN_SUBDIRS)}/ or "
            "checkpoints/latest); pass the run's output_dir or its final/ directory"
        )
    raise ArtifactError(f"{root}: not an adapted model (no {MANIFEST}; made by `xmeta adapt --out`)")


def open_artifact(name: str | os.PathLike[str], kind: str = "meta") -> Manifest:
    """Resolve ``name`` and return its manifest after verifying every file against its digest.

    Raises:
        ArtifactError: see :func:`resolve`, :func:`~xmeta.artifacts.manifest.read_manifest` and
            :func:`~xmeta.artifacts.manifest.verify`.
    """
    manifest = read_manifest(resolve(name, kind))
    seconds = verify(manifest)
    logger.debug("verified %s (%d files) in %.3fs", manifest.root, len(manifest.files), seconds)
    return manifest


def write_artifact(directory: str | os.PathLike[str], manifest: Manifest, writers: Mapping[str, Writer]) -> Path:
    """Write an artifact atomically: every file into a temporary sibling, digests, manifest last, rename.

    An existing artifact (of any format) at ``directory`` is replaced; any other non-empty directory
    is refused, so a typo in ``--out`` never deletes a user's files. A full disk or a refused write
    is a :class:`~xmeta.errors.WriteError` naming ``directory``; nothing half-written is left.

    Args:
        directory: where the artifact goes.
        manifest: its facts; ``files`` is filled here.
        writers: relative file name -> a function that writes that file at the path it is given.

    Raises:
        ArtifactError: ``directory`` is a file or a non-empty directory that is not an artifact.
        WriteError: the disk is full or the write is refused.
    """
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not has_manifest(out):
        raise ArtifactError(f"{out}: directory exists and is not an xmeta artifact; choose a new or empty directory")
    with atomic_directory(out) as tmp:
        for name, write in writers.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            write(tmp / name)
        _user_modes(tmp)
        manifest.files = describe_files(tmp)
        text = json.dumps(manifest.to_json(), indent=1, ensure_ascii=False) + "\n"
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
    manifest.root = out
    return out


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary sibling of ``directory`` to fill; when the block ends without error its files
    are synced and it replaces ``directory`` by rename (a reader sees the old directory or the new
    one, never a mix). On any error it is removed. Errors of the disk name ``directory``
    (``xmeta.errors.writing``). Callers check first that ``directory`` may be replaced.
    """
    out = Path(directory)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    with writing(out):
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            yield tmp
            for f in tmp.rglob("*"):
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())  # on disk before the rename makes it visible
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)


def _user_modes(root: Path) -> None:
    """Give every file the mode ``open(..., "w")`` would (0o666 less the umask): some writers
    (safetensors) create 0o600 files, which other users of a shared model directory cannot read."""
    probe = root / ".mode-probe"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = probe.stat().st_mode & 0o777
    probe.unlink()
    for path in root.rglob("*"):
        if path.is_file():
            path.chmod(mode)


def copy_writers(manifest: Manifest, skip: tuple[str, ...] = ()) -> dict[str, Writer]:
    """Writers that copy a (verified) artifact's files, for writing it elsewhere with changes."""
    root = manifest._root
    names = list(manifest.files) if not manifest.legacy else [p.relative_to(root).as_posix() for p in root.rglob("*")]
    return {
        n: (lambda dst, src=root / n: shutil.copyfile(src, dst))
        for n in names
        if n not in skip and (root / n).is_file() and n not in (MANIFEST, *LEGACY)
    }
