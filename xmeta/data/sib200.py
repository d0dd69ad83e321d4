"""SIB-200 topic classification (Adelani et al., 2023): 7 topics, ~200 languages, parallel.

Two sources give the same dataset (same uids, labels, texts):

* a local directory in the upstream layout ``<root>/<lang>/{train,dev,test}.tsv`` with columns
  ``index_id, category, text`` (github.com/dadelani/sib-200, ``data/annotated``);
* the Hugging Face Hub dataset ``Davlan/sib200`` (one config per language; its ``validation``
  split is our ``dev``), used when no local directory is configured and the hub is reachable.

Label ids follow the *sorted* category list, so they mean the same thing in every language and
from either source. ``source_id`` is ``sib200:<index_id>``: the same sentence in every language.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from xmeta.data.schema import RecordBuilder, normalize_split, normalize_splits
from xmeta.data.tasks import TASKS, CorpusFile, build_corpus, resolve_data_dir, select_langs
from xmeta.errors import InputError

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

TASK = "sib200"
HUB_ID = "Davlan/sib200"
# sorted(labels.txt): used when a directory has no labels.txt, and for the hub.
LABELS: tuple[str, ...] = (
    "entertainment",
    "geography",
    "health",
    "politics",
    "science/technology",
    "sports",
    "travel",
)
HOW_TO_GET = (
    "Get SIB-200 from https://github.com/dadelani/sib-200 (data/annotated/<lang>/{train,dev,test}.tsv) "
    f"or the Hugging Face Hub dataset {HUB_ID}; then pass --data-dir / data_dir, or set XMETA_DATA_DIR, "
    "to the directory that contains sib200/ (or to the annotated directory itself)."
)
_HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def _is_lang_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f"{s}.tsv").is_file() for s in ("train", "dev", "test"))


def find_annotated_dir(root: Path) -> Path | None:
    """The directory holding ``<lang>/*.tsv`` under ``root``: ``root/sib200/annotated``, ``root/annotated`` or ``root``."""
    for candidate in (root / "sib200" / "annotated", root / "sib200", root / "annotated", root):
        if candidate.is_dir() and any(_is_lang_dir(p) for p in candidate.iterdir()):
            return candidate
    return None


def local_languages(annotated: Path) -> list[str]:
    """Language codes (sub-directory names) of a local SIB-200 directory."""
    return sorted(p.name for p in annotated.iterdir() if _is_lang_dir(p))


def read_labels(annotated: Path, langs: Sequence[str]) -> tuple[str, ...]:
    """Sorted categories from ``labels.txt`` (top level or a language directory), else :data:`LABELS`."""
    for path in [annotated / "labels.txt"] + [annotated / lang / "labels.txt" for lang in langs]:
        if path.is_file():
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if names:
                return tuple(sorted(set(names)))
    return LABELS


def load_local(annotated: Path, langs: Sequence[str] | None, splits: Sequence[str], cache: bool = True) -> Dataset:
    """Parse a local SIB-200 directory (through the Arrow cache)."""
    chosen = select_langs(TASK, local_languages(annotated), langs, annotated)
    files = [CorpusFile(annotated / lang / f"{split}.tsv", lang, split) for lang in chosen for split in splits]
    return build_corpus(
        TASK,
        files,
        read_labels(annotated, chosen),
        text_column="text",
        label_column="category",
        key_column="index_id",
        parallel=True,
        fmt="tsv",
        cache=cache,
    )


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _load_hub_config(lang: str, revision: str | None):
    import datasets

    try:
        return datasets.load_dataset(HUB_ID, lang, revision=revision)
    except RuntimeError as err:
        # datasets >= 4 refuses loading scripts; the hub's automatic parquet export has the same rows.
        if "scripts are no longer supported" not in str(err):
            raise
        log.info("%s: hub repo uses a loading script; reading its parquet export instead", HUB_ID)
        return datasets.load_dataset(HUB_ID, revision="refs/convert/parquet", data_dir=lang)


def load_hub(langs: Sequence[str] | None, splits: Sequence[str], revision: str | None = None) -> Dataset:
    """Download SIB-200 from the hub (``Davlan/sib200``) into the same schema as :func:`load_local`."""
    import datasets

    try:
        available = datasets.get_dataset_config_names(HUB_ID, revision=revision)
        chosen = select_langs(TASK, available, langs, f"hub:{HUB_ID}")
        builder = RecordBuilder(TASK, LABELS, parallel=True)
        for lang in chosen:
            dd = _load_hub_config(lang, revision)
            for split in splits:
                hub_split = _HUB_SPLITS[split]
                if hub_split not in dd:
                    raise InputError(f"hub:{HUB_ID}/{lang}: no split {hub_split!r} (has {', '.join(dd)})")
                _add_hub_rows(builder, dd[hub_split], lang, normalize_split(split))
    except InputError:
        raise
    except (ConnectionError, OSError) as err:
        raise InputError(f"could not load SIB-200 from the hub ({HUB_ID}): {err}. {HOW_TO_GET}") from None
    return builder.to_dataset()


def _add_hub_rows(builder: RecordBuilder, split_ds, lang: str, split: str) -> None:
    where = f"hub:{HUB_ID}/{lang}/{split}"
    label_feature = split_ds.features.get("category")
    names = getattr(label_feature, "names", None)  # a ClassLabel on some exports, plain strings on others
    for i, row in enumerate(split_ds):
        category = names[row["category"]] if names else str(row["category"]).strip()
        if builder.label_id(category) is None:
            raise InputError(f"{where} row {i}: unknown category {category!r} (known: {', '.join(LABELS)})")
        text = row["text"] or ""
        if not text.strip():
            raise InputError(f"{where} row {i}: empty text")
        key = str(row["index_id"]).strip()
        builder.add(lang=lang, split=split, key=key, text=text, label_name=category, source_id=f"{TASK}:{key}")


@TASKS.register(TASK)
def load_sib200(
    data_dir: str | Path | None = None,
    langs: Sequence[str] | None = None,
    splits: Sequence[str] = ("train", "dev", "test"),
    *,
    source: Literal["auto", "local", "hub"] = "auto",
    cache: bool = True,
    revision: str | None = None,
) -> Dataset:
    """Load SIB-200 from a local directory or, when none is configured, from the hub.

    Args:
        data_dir: directory containing ``sib200/`` (or the annotated directory); default ``$XMETA_DATA_DIR``.
        langs: FLORES-200 codes such as ``"swh_Latn"`` (``None``: all present).
        splits: any of ``train``, ``dev``, ``test``.
        source: ``"local"``, ``"hub"``, or ``"auto"`` (local if a data directory is configured, else
            the hub unless ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set).
        cache: keep the parsed local corpus as Arrow under the xmeta cache (see :mod:`xmeta.data.cache`).
        revision: hub revision (commit or branch) to pin.

    Raises:
        InputError: no data found (the message says how to get it), unknown language, bad rows.
    """
    if source not in ("auto", "local", "hub"):
        raise InputError(f"source must be 'auto', 'local' or 'hub', got {source!r}")
    splits = normalize_splits(splits)  # callers may bypass load_task
    root = resolve_data_dir(data_dir)
    if source == "hub" or (source == "auto" and root is None and not _hub_offline()):
        return load_hub(langs, splits, revision=revision)
    if root is None:
        raise InputError(f"SIB-200 not found: no data directory given and XMETA_DATA_DIR is not set. {HOW_TO_GET}")
    annotated = find_annotated_dir(root)
    if annotated is None:
        raise InputError(f"SIB-200 not found under {root} (looked for sib200/annotated/<lang>/train.tsv). {HOW_TO_GET}")
    return load_local(annotated, langs, splits, cache=cache)
