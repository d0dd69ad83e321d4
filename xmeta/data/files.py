"""A user's own labelled files (TSV, CSV or JSONL with a header) as a corpus: task ``files``.

Give the files either explicitly (``files=[FileSpec(path, lang, split), "swh_Latn:dev=my.tsv"]``)
or as a directory in the layout ``<data_dir>/<lang>/<split>.{tsv,csv,jsonl}``. Any language code
and any label set work. Label ids follow the sorted label names (given, or collected from all the
files), so they are the same in every language. With ``id_column`` the ids become the uid keys and,
since rows sharing an id across languages are translations, the ``source_id`` of a parallel corpus.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xmeta.data.readers import FILE_SUFFIXES, read_rows
from xmeta.data.schema import SPLITS, normalize_split, normalize_splits
from xmeta.data.tasks import TASKS, CorpusFile, build_corpus, resolve_data_dir, select_langs
from xmeta.errors import InputError

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

TASK = "files"
_SPEC = re.compile(r"^(?P<lang>[^:=]+):(?P<split>[^:=]+)=(?P<path>.+)$")


@dataclass(frozen=True)
class FileSpec:
    """A user file and the language and split of its rows."""

    path: Path
    lang: str = "und"
    split: str = "train"


def parse_file_spec(spec: str | Path | FileSpec) -> FileSpec:
    """``"LANG:SPLIT=PATH"`` (or a :class:`FileSpec`) -> :class:`FileSpec`.

    A bare path is accepted when it sits in the layout ``<lang>/<split>.<ext>``.

    Raises:
        InputError: a string that is neither form.
    """
    if isinstance(spec, FileSpec):
        return FileSpec(Path(spec.path), spec.lang, normalize_split(spec.split))
    match = _SPEC.match(str(spec))
    if match:
        return FileSpec(Path(match["path"]), match["lang"].strip(), normalize_split(match["split"]))
    path = Path(spec)
    if path.stem.lower() in SPLITS and path.parent.name:
        return FileSpec(path, path.parent.name, path.stem.lower())
    raise InputError(
        f"file spec {str(spec)!r}: write LANG:SPLIT=PATH (e.g. swh_Latn:dev=my.tsv) or use <lang>/<split>.tsv"
    )


def scan_layout(root: Path) -> list[FileSpec]:
    """All ``<root>/<lang>/<split>.<ext>`` files, in a stable order."""
    if not root.is_dir():
        raise InputError(f"{root}: directory not found")
    specs = []
    for lang_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for split in SPLITS:
            found = [lang_dir / f"{split}{ext}" for ext in FILE_SUFFIXES if (lang_dir / f"{split}{ext}").is_file()]
            if len(found) > 1:
                raise InputError(f"{lang_dir}: several files for split {split!r}: {', '.join(p.name for p in found)}")
            if found:
                specs.append(FileSpec(found[0], lang_dir.name, split))
    if not specs:
        raise InputError(f"{root}: no <lang>/<split>.{{tsv,csv,jsonl}} files found (splits: {', '.join(SPLITS)})")
    return specs


def collect_labels(specs: Sequence[FileSpec], text_column: str, label_column: str) -> tuple[str, ...]:
    """Sorted set of the labels used in all files (a pre-pass so that ids agree across languages)."""
    labels: set[str] = set()
    for spec in specs:
        for row in read_rows(spec.path, [text_column, label_column]):
            if row.values[1].strip():
                labels.add(row.values[1].strip())
    if len(labels) < 2:
        raise InputError(f"need at least 2 distinct labels in column {label_column!r}, found {sorted(labels)}")
    return tuple(sorted(labels))


@TASKS.register(TASK)
def load_files(
    data_dir: str | Path | None = None,
    langs: Sequence[str] | None = None,
    splits: Sequence[str] = SPLITS,
    *,
    files: Sequence[str | Path | FileSpec] | None = None,
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    label_names: Sequence[str] | None = None,
    uid_prefix: str = TASK,
    skip_bad_rows: bool = False,
    cache: bool = False,
) -> Dataset:
    """Load user files into the standard schema.

    Args:
        data_dir: a directory in the ``<lang>/<split>.<ext>`` layout (used when ``files`` is not given).
        langs: languages to keep (``None``: all).
        splits: splits to keep.
        files: explicit files: :class:`FileSpec` or ``"LANG:SPLIT=PATH"`` strings.
        text_column: header name of the text column.
        label_column: header name of the label column.
        id_column: optional header name of an id column; ids key the uids and, shared across
            languages, make the corpus parallel (``source_id``).
        label_names: the label set; ``None`` collects it from the files. Sorted for the ids.
        uid_prefix: the corpus name at the start of uids (``<uid_prefix>:<lang>:<split>:<key>``).
        skip_bad_rows: skip (and count in a warning) rows with empty text or an unknown label
            instead of raising.
        cache: cache the parsed corpus (off by default: user files are usually small and edited).

    Raises:
        InputError: missing file, malformed row, empty text, unknown column or label, unknown language.
    """
    splits = normalize_splits(splits)  # callers may bypass load_task
    if files is None:
        root = resolve_data_dir(data_dir)
        if root is None:
            raise InputError("task 'files' needs files=[LANG:SPLIT=PATH, ...] or a data directory <lang>/<split>.tsv")
        specs = scan_layout(root)
        where: str | Path = root
    else:
        specs = [parse_file_spec(s) for s in files]
        where = "the given files"
    chosen = set(select_langs(uid_prefix, sorted({s.lang for s in specs}), langs, where))
    specs = [s for s in specs if s.lang in chosen and s.split in splits]
    if not specs:
        raise InputError(f"no files for splits {', '.join(splits)} among {where}")
    owners: dict[tuple[str, str], Path] = {}
    for spec in specs:
        other = owners.setdefault((spec.lang, spec.split), spec.path)
        if other != spec.path:
            raise InputError(f"{spec.path}: language {spec.lang!r} split {spec.split!r} is already given by {other}")
        if not spec.path.is_file():
            raise InputError(f"{spec.path}: file not found (language {spec.lang!r}, split {spec.split!r})")
    names = tuple(sorted(set(label_names))) if label_names else collect_labels(specs, text_column, label_column)
    return build_corpus(
        uid_prefix,
        [CorpusFile(s.path, s.lang, s.split) for s in specs],
        names,
        text_column=text_column,
        label_column=label_column,
        key_column=id_column,
        parallel=id_column is not None,
        skip_bad_rows=skip_bad_rows,
        cache=cache,
    )
