"""Texts to classify for ``xmeta predict``: a TSV/CSV/JSONL column, or plain text one per line.

The format comes from the suffix (``.tsv``/``.csv``/``.jsonl``/... as in ``xmeta.data.readers``);
``.txt``, any other suffix, no suffix, or ``-`` (stdin) are read as plain text, one text per line.
Blank lines and empty text cells are skipped with a logged count, so the output has one line per
non-empty input text, in input order.

``iter_texts`` streams: it decodes one line at a time and holds nothing else, so a file larger
than memory can be classified in chunks (``chunked``). Its errors are those of
``xmeta.data.readers`` (same messages, naming the file and the line); ``read_texts`` is the list.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Literal

from xmeta.data.readers import _SUFFIX_FORMATS, iter_rows
from xmeta.errors import InputError

logger = logging.getLogger(__name__)

InputFormat = Literal["auto", "txt", "tsv", "csv", "jsonl"]
INPUT_FORMATS: tuple[str, ...] = ("auto", "txt", "tsv", "csv", "jsonl")
STDIN = "-"
_BOM = "\ufeff"


def input_format(path: str | Path, fmt: InputFormat = "auto") -> str:
    """``fmt``, or for ``auto`` the table format of the suffix, else ``txt``."""
    if fmt != "auto":
        if fmt not in INPUT_FORMATS:
            raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(INPUT_FORMATS)}")
        return fmt
    if str(path) == STDIN:
        return "txt"
    return _SUFFIX_FORMATS.get(Path(path).suffix.lower(), "txt")


def _open(path: str | Path) -> tuple[BinaryIO, str]:
    """The byte stream of ``path`` (stdin for ``-``) and the name errors use for it."""
    if str(path) == STDIN:
        return sys.stdin.buffer, "<stdin>"
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    return open(p, "rb"), str(p)  # noqa: SIM115 - closed by the caller's generator


def _decoded_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    """The lines of ``stream`` decoded as UTF-8 one at a time, terminators kept.

    Splitting bytes on ``\\n`` is safe: no multi-byte UTF-8 sequence contains that byte. A leading
    BOM (spreadsheet exports) is dropped, as ``utf-8-sig`` does for a whole file.
    """
    offset = 0
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{name}:{number}: not valid UTF-8 ({err.reason} at byte {offset + err.start})") from None
        if number == 1 and line.startswith(_BOM):
            line = line[1:]
        offset += len(raw)
        yield line


def iter_texts(path: str | Path, *, text_column: str = "text", fmt: InputFormat = "auto") -> Iterator[str]:
    """Stream the non-empty texts of ``path`` (``-`` reads stdin as plain text), in order.

    Memory holds one input line at a time. Problems are raised when the stream reaches them
    (a missing column at the first ``next``), with the messages of ``xmeta.data.readers``.

    Raises:
        InputError: missing file, undecodable bytes, a missing column or a malformed row.
    """
    kind = input_format(path, fmt)
    stream, name = _open(path)
    skipped = 0
    try:
        lines = _decoded_lines(stream, name)
        if kind == "txt":
            texts: Iterable[str] = (t for line in lines for t in line.splitlines())
        else:  # the dataset readers' row parser, one line at a time
            texts = (row.values[0] for row in iter_rows(lines, name, [text_column], kind))
        for text in texts:
            if text.strip():
                yield text
            else:
                skipped += 1
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if skipped:
        logger.warning("%s: skipped %d empty line(s)/text(s)", path, skipped)


def read_texts(path: str | Path, *, text_column: str = "text", fmt: InputFormat = "auto") -> list[str]:
    """The non-empty texts of ``path`` as a list (see ``iter_texts``, which streams them)."""
    return list(iter_texts(path, text_column=text_column, fmt=fmt))


def chunked(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of ``size`` texts (the last one shorter); holds one list at a time."""
    if size < 1:
        raise InputError(f"chunk size must be >= 1, got {size}")
    it = iter(texts)
    while chunk := list(islice(it, size)):
        yield chunk
