"""Errors the CLI reports as one line (no traceback): bad input, bad config, missing models, and
writes the machine refused (full disk, no permission), with :func:`writing` to turn those into errors."""

from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class XmetaError(Exception):
    """Base class for errors caused by user input or environment, not by bugs."""


class InputError(XmetaError, ValueError):
    """A user file, column, row or value that cannot be used; the message names where."""


class ModelUnavailableError(XmetaError):
    """A model that can be found neither in the cache, nor on the hub, nor in a PyPI package."""


# Failures of a write that are the machine's or the user's to fix, not xmeta's: a full disk or
# quota, a file too large for the file system, no permission, a read-only mount.
NO_SPACE_ERRNOS = frozenset(c for c in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if c is not None)
WRITE_ERRNOS = NO_SPACE_ERRNOS | {errno.EACCES, errno.EPERM, errno.EROFS}


class WriteError(XmetaError):
    """A file or directory xmeta was writing could not be written (full disk, no permission).

    Args:
        path: What was being written (``None`` when unknown); the message names it.
        err: The refused operation's error: an ``OSError``, or an I/O error a Rust extension
            raised as text (see :func:`os_errno`).
        verb: ``"write"``, or ``"access"`` where the failed operation may have been a read.
    """

    def __init__(self, path: str | os.PathLike[str] | None, err: BaseException, verb: str = "write") -> None:
        self.path = None if path is None else os.fspath(path)
        self.errno = os_errno(err)
        where = f" {self.path}" if self.path else ""
        reason = os.strerror(self.errno) if self.errno is not None else str(err)
        if self.errno in NO_SPACE_ERRNOS:
            hint = "free some space, or write somewhere else (another --out/--output; $XMETA_CACHE for the cache)"
        else:
            hint = "check the permissions of the path and its folder and that it is not on a read-only file system"
        super().__init__(f"cannot {verb}{where}: {reason}; {hint}")


# How Rust's std::io::Error shows an OS error; safetensors and tokenizers raise it inside their own
# exception types (``SafetensorError: Error while serializing: I/O error: ... (os error 28)``).
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def os_errno(err: BaseException) -> int | None:
    """The OS error code of ``err``: ``errno`` of an ``OSError``, or the one a Rust extension printed."""
    if isinstance(err, OSError):
        return err.errno
    found = None if isinstance(err, XmetaError) else _RUST_OS_ERROR.search(str(err))
    return int(found.group(1)) if found else None


@contextmanager
def writing(path: str | os.PathLike[str], *, atomic: bool = False) -> Iterator[Path]:
    """Write ``path`` inside this block; a full disk or a refused write becomes a :class:`WriteError`.

    The error names ``path`` (what the user asked for, not a temporary file) and says what to do;
    other exceptions pass through unchanged. I/O errors that Rust extensions raise as their own
    exception types (safetensors' ``save_file``) are recognised too.

    Args:
        path: The file or directory being written.
        atomic: Yield a temporary file next to ``path`` (same folder, so same file system, same
            suffix, so writers that go by it still work) to be written instead; when the block ends
            without error it is synced and renamed over ``path``, so readers see the old file or
            the new one and never a partial one. On any error it is removed. A ``path`` that
            exists but is not a regular file (``/dev/stdout``, a FIFO, ``/dev/full``) is yielded
            as is: it cannot be replaced.

    Yields:
        The path to write to: ``path`` itself, or the temporary file when ``atomic``.

    Example:
        >>> with writing(out / "results.json", atomic=True) as tmp:  # doctest: +SKIP
        ...     tmp.write_text(text, encoding="utf-8")
    """
    target = Path(path)
    try:
        if not atomic or (target.exists() and not target.is_file()):
            yield target
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_sibling(target)
        try:
            yield tmp
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)  # the data is on disk before the rename makes it visible
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except Exception as err:
        if os_errno(err) not in WRITE_ERRNOS:
            raise
        raise WriteError(target, err) from err


def _create_sibling(target: Path) -> Path:
    """A new empty file ``.tmp-<random>-<name>`` next to ``target``.

    Created like ``open(..., "w")`` would create ``target`` (mode 0o666 less the umask), unlike
    ``tempfile.mkstemp``'s 0o600, since it becomes the user's file.
    """
    while True:
        tmp = target.with_name(f".tmp-{secrets.token_hex(4)}-{target.name}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
