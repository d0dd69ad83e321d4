"""Published SIB-200 accuracies (other protocols), shown beside our table and never mixed into it.

The numbers come from ``<data dir>/sib200/published_results.csv`` (SIB-200 paper Table 7, EMMA-500
evaluation results), in percent, per language. They are full-test-set, 7-class results of
supervised training, cross-lingual transfer or zero/3-shot prompting: other protocols than our
N-way K-shot episodes, so they are reported in their own table with that label.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "published_results.csv"
PROTOCOL_NOTE = (
    "Published SIB-200 results under OTHER protocols (full 204-sentence test set, 7 classes; supervised "
    "training on ~701 examples, zero-shot cross-lingual transfer, or zero/3-shot LLM prompting). Not "
    "comparable cell-for-cell with our N-way K-shot episodes; shown for orientation only."
)
COLUMNS: dict[str, str] = {
    "mlp": "MLP (supervised)",
    "xlmr_base": "XLM-R base (supervised)",
    "xlmr_large": "XLM-R large (supervised)",
    "xfer_eng": "XLM-R large, zero-shot from eng",
    "xfer_ara": "XLM-R large, zero-shot from ara",
    "xfer_zho": "XLM-R large, zero-shot from zho",
    "gpt35_zeroshot": "GPT-3.5 zero-shot",
    "gpt4_zeroshot": "GPT-4 zero-shot",
    "qwen3_14b_3shot": "Qwen3-14B-Base 3-shot",
    "llama31_8b_3shot": "Llama-3.1-8B 3-shot",
    "gemma2_9b_it_3shot": "gemma-2-9b-it 3-shot",
    "gemma3_12b_it_3shot": "gemma-3-12b-it 3-shot (EMMA-500 eval)",
    "emma500_llama31_8b_bi_3shot": "EMMA-500 Llama-3.1-8B bilingual 3-shot",
}


def find_published(data_dir: str | Path | None) -> Path | None:
    """The published-results CSV under a data directory (or the sib200 directory itself), if any."""
    from xmeta.data.tasks import resolve_data_dir

    root = resolve_data_dir(data_dir)
    if root is None:
        return None
    for path in (root / "sib200" / FILE_NAME, root / FILE_NAME):
        if path.is_file():
            return path
    return None


def _number(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def load_published(path: Path, langs: Sequence[str]) -> dict[str, Any]:
    """Published numbers (percent) for ``langs``, plus their mean over the languages present.

    Returns:
        ``{"source", "note", "columns", "per_lang": {lang: {column: value}}, "mean", "missing_langs",
        "in_xlmr": {lang: bool}}``.
    """
    with path.open(encoding="utf-8", newline="") as f:
        rows = {row["lang"]: row for row in csv.DictReader(f)}
    per_lang: dict[str, dict[str, float | None]] = {}
    in_xlmr: dict[str, bool] = {}
    for lang in langs:
        row = rows.get(lang)
        if row is None:
            continue
        per_lang[lang] = {col: _number(row.get(col)) for col in COLUMNS}
        in_xlmr[lang] = bool(_number(row.get("in_xlmr")))
    mean: dict[str, float | None] = {}
    for col in COLUMNS:
        values = [v[col] for v in per_lang.values() if v[col] is not None]
        mean[col] = sum(values) / len(values) if values else None
    missing = [lang for lang in langs if lang not in per_lang]
    if missing:
        log.info("no published SIB-200 numbers for %s", ", ".join(missing))
    return {
        "source": str(path),
        "note": PROTOCOL_NOTE,
        "unit": "percent",
        "columns": dict(COLUMNS),
        "per_lang": per_lang,
        "mean": mean,
        "in_xlmr": in_xlmr,
        "missing_langs": missing,
    }
