"""Texts to classify for ``xmeta predict``: a TSV/CSV/JSONL column, or plain text one per line.

The format comes from the suffix (``.tsv``/``.csv``/``.jsonl``/... as in ``xmeta.data.readers``);
``.txt``, any other suffix, no suffix, or ``-`` (stdin) are read as plain text, one text per line.
Blank lines and empty text cells are skipped with a logged count, so the output has one line per
non-empty input text, in input order.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Literal

from xmeta.data.readers import _SUFFIX_FORMATS, _read_text, read_rows
from xmeta.errors import InputError

logger = logging.getLogger(__name__)

InputFormat = Literal["auto", "txt", "tsv", "csv", "jsonl"]
INPUT_FORMATS: tuple[str, ...] = ("auto", "txt", "tsv", "csv", "jsonl")


def input_format(path: str | Path, fmt: InputFormat = "auto") -> str:
    """``fmt``, or for ``auto`` the table format of the suffix, else ``txt``."""
    if fmt != "auto":
        if fmt not in INPUT_FORMATS:
            raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(INPUT_FORMATS)}")
        return fmt
    if str(path) == "-":
        return "txt"
    return _SUFFIX_FORMATS.get(Path(path).suffix.lower(), "txt")


def _decode_stdin() -> str:
    raw = sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError(f"<stdin>:{line}: not valid UTF-8 ({err.reason} at byte {err.start})") from None


def read_texts(path: str | Path, *, text_column: str = "text", fmt: InputFormat = "auto") -> list[str]:
    """The non-empty texts of ``path`` (``-`` reads stdin as plain text), in order.

    Raises:
        InputError: missing file, undecodable bytes, a missing column or a malformed row.
    """
    kind = input_format(path, fmt)
    if kind == "txt":
        # Reuses the readers' decoding so that bad bytes are reported with the same file:line form.
        text = _decode_stdin() if str(path) == "-" else _read_text(Path(path))
        texts = text.splitlines()
    else:
        texts = [row.values[0] for row in read_rows(Path(path), [text_column], kind)]  # type: ignore[arg-type]
    kept = [t for t in texts if t.strip()]
    if len(kept) < len(texts):
        logger.warning("%s: skipped %d empty line(s)/text(s)", path, len(texts) - len(kept))
    return kept
