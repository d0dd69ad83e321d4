"""AfriSenti (SemEval-2023 Task 12): tweet sentiment in 14 African languages; not parallel.

Local layout: ``<root>/afrisenti/<lang>/{train,dev,test}.tsv`` with columns ``tweet, label``
(``positive``/``negative``/``neutral``). Directory codes are ISO 639-3 (``hau``); the ``lang``
column uses FLORES-style codes with the script (``hau_Latn``), like every other corpus here, and
``langs`` accepts either form. ``orm`` and ``tir`` ship a header-only ``train.tsv`` (no rows).
Keys in uids are the 0-based data-row index: ``afrisenti:hau_Latn:train:17``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xmeta.data.schema import normalize_splits
from xmeta.data.tasks import TASKS, CorpusFile, build_corpus, resolve_data_dir, select_langs
from xmeta.errors import InputError

if TYPE_CHECKING:
    from datasets import Dataset

TASK = "afrisenti"
LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
# Directory code -> FLORES-style code. The ISO part is kept as published (swa, orm are the
# macrolanguage codes AfriSenti uses; SIB-200 has swh_Latn / gaz_Latn for the same languages).
LANG_CODES: dict[str, str] = {
    "amh": "amh_Ethi",
    "arq": "arq_Arab",
    "ary": "ary_Arab",
    "hau": "hau_Latn",
    "ibo": "ibo_Latn",
    "kin": "kin_Latn",
    "orm": "orm_Latn",
    "pcm": "pcm_Latn",
    "por": "por_Latn",
    "swa": "swa_Latn",
    "tir": "tir_Ethi",
    "tso": "tso_Latn",
    "twi": "twi_Latn",
    "yor": "yor_Latn",
}
HOW_TO_GET = (
    "Get AfriSenti from https://github.com/afrisenti-semeval/afrisent-semeval-2023 (data/<lang>/*.tsv) "
    "and pass --data-dir / data_dir, or set XMETA_DATA_DIR, to the directory that contains afrisenti/."
)


def find_dir(root: Path) -> Path | None:
    """``root/afrisenti`` or ``root`` itself, whichever holds ``<lang>/{train,dev,test}.tsv``."""
    for candidate in (root / TASK, root):
        if candidate.is_dir() and any(
            (p / "dev.tsv").is_file() or (p / "test.tsv").is_file() for p in candidate.iterdir()
        ):
            return candidate
    return None


def _dir_langs(base: Path) -> dict[str, str]:
    """FLORES-style code -> directory name, for every language directory present."""
    out = {}
    for p in sorted(base.iterdir()):
        if p.is_dir() and any((p / f"{s}.tsv").is_file() for s in ("train", "dev", "test")):
            out[LANG_CODES.get(p.name, p.name)] = p.name
    return out


@TASKS.register(TASK)
def load_afrisenti(
    data_dir: str | Path | None = None,
    langs: Sequence[str] | None = None,
    splits: Sequence[str] = ("train", "dev", "test"),
    *,
    cache: bool = True,
) -> Dataset:
    """Load AfriSenti from a local directory.

    Args:
        data_dir: directory containing ``afrisenti/`` (default ``$XMETA_DATA_DIR``).
        langs: ``"hau"`` or ``"hau_Latn"`` style codes (``None``: all present).
        splits: any of ``train``, ``dev``, ``test``.
        cache: keep the parsed corpus as Arrow in the xmeta cache.

    Raises:
        InputError: directory not found (with where to get the data), unknown language, bad rows.
    """
    splits = normalize_splits(splits)  # callers may bypass load_task
    root = resolve_data_dir(data_dir)
    if root is None:
        raise InputError(f"AfriSenti not found: no data directory given and XMETA_DATA_DIR is not set. {HOW_TO_GET}")
    base = find_dir(root)
    if base is None:
        raise InputError(f"AfriSenti not found under {root} (looked for afrisenti/<lang>/dev.tsv). {HOW_TO_GET}")
    dirs = _dir_langs(base)
    if langs is not None:
        # Accept the directory code too ("hau" for "hau_Latn").
        langs = [LANG_CODES.get(lang, lang) for lang in langs]
    chosen = select_langs(TASK, list(dirs), langs, base)
    files = [CorpusFile(base / dirs[lang] / f"{split}.tsv", lang, split) for lang in chosen for split in splits]
    return build_corpus(
        TASK,
        files,
        LABELS,
        text_column="tweet",
        label_column="label",
        parallel=False,
        fmt="tsv",
        cache=cache,
    )
