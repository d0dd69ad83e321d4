"""Read TSV / CSV / JSONL files with a header into rows that remember their line numbers.

Every problem is an :class:`~xmeta.errors.InputError` that names the file and the line (and the
column and value where there is one), because "KeyError: 'text'" three frames deep in a sampler
tells a user nothing about which of 500 files is broken.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from xmeta.errors import InputError

log = logging.getLogger(__name__)

Format = Literal["tsv", "csv", "jsonl"]
_SUFFIX_FORMATS: dict[str, Format] = {
    ".tsv": "tsv",
    ".tab": "tsv",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
FILE_SUFFIXES: tuple[str, ...] = tuple(_SUFFIX_FORMATS)


@dataclass(frozen=True)
class Row:
    """One data row: ``line`` is the 1-based line where it starts; ``values`` follow the requested columns."""

    line: int
    values: tuple[str, ...]


def detect_format(path: Path) -> Format:
    """The file format from its suffix (``.tsv``, ``.csv``, ``.jsonl``).

    Raises:
        InputError: for any other suffix.
    """
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; use one of {', '.join(FILE_SUFFIXES)}"
        )
    return fmt


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        # utf-8-sig: spreadsheet exports often start with a BOM that would glue itself to the first column name
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 ({err.reason} at byte {err.start})") from None


def close_hint(name: str, known: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the closest known names, or an empty string."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _missing_column(path: Path, column: str, header: Sequence[str]) -> InputError:
    hint = close_hint(column, header)
    return InputError(f"{path}:1: no column {column!r} in the header (columns: {', '.join(header)}).{hint}")


def read_rows(path: str | Path, columns: Sequence[str], fmt: Format | None = None) -> list[Row]:
    """Read ``columns`` (by header name) from every data row of a TSV, CSV or JSONL file.

    Args:
        path: the file; its suffix gives the format unless ``fmt`` is given.
        columns: header names to extract, in the order wanted in :attr:`Row.values`.
        fmt: ``"tsv"``, ``"csv"`` or ``"jsonl"`` to override the suffix.

    Returns:
        One :class:`Row` per data row (a header-only file gives ``[]``). Blank lines are skipped
        and counted in a warning.

    Raises:
        InputError: missing file, bad encoding, no header, a column absent from the header, a row
            with the wrong number of fields, or (JSONL) a line that is not a JSON object.
    """
    path = Path(path)
    fmt = fmt or detect_format(path)
    return list(iter_rows(io.StringIO(_read_text(path), newline=""), str(path), columns, fmt))


def iter_rows(lines: Iterable[str], name: str, columns: Sequence[str], fmt: Format) -> Iterator[Row]:
    """Stream :class:`Row` objects from lines of a TSV/CSV/JSONL file (``read_rows`` collects them;
    ``xmeta predict`` streams files larger than memory through it). ``name`` prefixes errors.

    Raises:
        InputError: as ``read_rows``, when the stream reaches the problem.
    """
    if fmt == "jsonl":
        return _iter_jsonl(lines, name, columns)
    return _iter_delimited(lines, name, columns, "\t" if fmt == "tsv" else ",")


def _iter_delimited(lines: Iterable[str], name: str, columns: Sequence[str], delimiter: str) -> Iterator[Row]:
    # The csv module (not str.split) because published TSVs quote fields that contain quotes,
    # e.g. SIB-200's Arabic-script files: "...""quoted""..." must come back as ...\"quoted\"...;
    # a quoted field may span lines, and ``line_num`` counts the physical lines it consumed.
    reader = csv.reader(lines, delimiter=delimiter)
    kind = "TSV" if delimiter == "\t" else "CSV"
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(
            f"{name}: empty file; expected a header line naming the columns {', '.join(columns)}"
        ) from None
    except csv.Error as err:
        raise InputError(f"{name}:1: malformed {kind} row: {err}") from None
    header = [h.strip() for h in header]
    index = {column: i for i, column in enumerate(header)}
    for column in columns:
        if column not in index:
            raise _missing_column(Path(name), column, header)
    wanted = [index[c] for c in columns]
    width = len(header)
    blank = 0
    line = reader.line_num + 1
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                blank += 1
            elif len(fields) != width:
                shown = delimiter.join(fields)
                shown = shown if len(shown) <= 80 else shown[:77] + "..."
                raise InputError(
                    f"{name}:{line}: expected {width} fields ({', '.join(header)}), got {len(fields)}: {shown!r}"
                )
            else:
                yield Row(line, tuple(fields[i] for i in wanted))
            line = reader.line_num + 1
    except csv.Error as err:
        raise InputError(f"{name}:{line}: malformed {kind} row: {err}") from None
    if blank:
        log.warning("%s: skipped %d blank line(s)", name, blank)


def _iter_jsonl(lines: Iterable[str], name: str, columns: Sequence[str]) -> Iterator[Row]:
    blank = 0
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            blank += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{name}:{line_no}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{name}:{line_no}: expected a JSON object per line, got {type(obj).__name__}")
        values = []
        for column in columns:
            if column not in obj:
                raise InputError(
                    f"{name}:{line_no}: no key {column!r} in this record (keys: {', '.join(map(str, obj))})."
                    + close_hint(column, [str(k) for k in obj])
                )
            value = obj[column]
            if value is None or isinstance(value, (dict, list)):
                raise InputError(f"{name}:{line_no}: key {column!r} must be a string or number, got {value!r}")
            values.append(str(value))
        yield Row(line_no, tuple(values))
    if blank:
        log.warning("%s: skipped %d blank line(s)", name, blank)
