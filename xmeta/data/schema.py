"""The one record schema every corpus becomes, and fast helpers to build and filter it.

Every corpus is a ``datasets.Dataset`` with the columns ``uid, text, label, label_name, lang,
split`` (``label`` is a ``ClassLabel`` over the corpus' label names, in a fixed order, so label
ids mean the same in every language). Parallel corpora add ``source_id``: the id of the source
sentence shared by all its translations, which is what the leakage guard compares.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from xmeta.errors import InputError
from xmeta.registry import did_you_mean

if TYPE_CHECKING:
    from datasets import Dataset, Features

COLUMNS: tuple[str, ...] = ("uid", "text", "label", "label_name", "lang", "split")
SOURCE_ID = "source_id"
SPLITS: tuple[str, ...] = ("train", "dev", "test")
_SPLIT_ALIASES = {"validation": "dev", "valid": "dev", "val": "dev", "development": "dev"}


def normalize_split(split: str) -> str:
    """Map a split name or alias (``validation`` -> ``dev``) to one of :data:`SPLITS`.

    Raises:
        InputError: for a name that is neither a split nor an alias.
    """
    name = _SPLIT_ALIASES.get(split.strip().lower(), split.strip().lower())
    if name not in SPLITS:
        raise InputError(did_you_mean(split, list(SPLITS) + list(_SPLIT_ALIASES), "split"))
    return name


def normalize_splits(splits: str | Sequence[str] | None) -> tuple[str, ...]:
    """Normalise a split selection; ``None`` means all splits. Order and duplicates are cleaned."""
    if splits is None:
        return SPLITS
    if isinstance(splits, str):
        splits = [s for s in splits.split(",") if s.strip()]
    chosen = {normalize_split(s) for s in splits}
    return tuple(s for s in SPLITS if s in chosen)


def make_uid(task: str, lang: str, split: str, key: str | int) -> str:
    """The stable example id, e.g. ``sib200:swh_Latn:test:123``."""
    return f"{task}:{lang}:{split}:{key}"


class RecordBuilder:
    """Accumulates records column by column and turns them into one ``Dataset``.

    Building plain Python lists and converting once with ``Dataset.from_dict`` is what makes
    loading all of SIB-200 (~185k rows) take about a second: per-row ``add_item`` would not.
    """

    def __init__(self, task: str, label_names: Sequence[str], parallel: bool) -> None:
        self.task = task
        self.label_names = tuple(label_names)
        self.parallel = parallel
        self._label_ids = {name: i for i, name in enumerate(self.label_names)}
        self.columns: dict[str, list] = {c: [] for c in COLUMNS}
        if parallel:
            self.columns[SOURCE_ID] = []

    def label_id(self, label_name: str) -> int | None:
        return self._label_ids.get(label_name)

    def add(
        self, *, lang: str, split: str, key: str | int, text: str, label_name: str, source_id: str | None = None
    ) -> str:
        """Append one record and return its uid. ``label_name`` must be one of ``label_names``."""
        uid = make_uid(self.task, lang, split, key)
        cols = self.columns
        cols["uid"].append(uid)
        cols["text"].append(text)
        cols["label"].append(self._label_ids[label_name])
        cols["label_name"].append(label_name)
        cols["lang"].append(lang)
        cols["split"].append(split)
        if self.parallel:
            cols[SOURCE_ID].append(source_id)
        return uid

    def __len__(self) -> int:
        return len(self.columns["uid"])

    def to_dataset(self) -> Dataset:
        return records_to_dataset(self.columns, self.label_names, self.task)


def features_for(label_names: Sequence[str], parallel: bool) -> Features:
    """The ``datasets.Features`` of a corpus with these label names."""
    from datasets import ClassLabel, Features, Value

    feats = {c: Value("string") for c in COLUMNS}
    feats["label"] = ClassLabel(names=list(label_names))
    if parallel:
        feats[SOURCE_ID] = Value("string")
    return Features(feats)


def records_to_dataset(columns: dict[str, list], label_names: Sequence[str], task: str) -> Dataset:
    """Columns (as lists) -> ``datasets.Dataset`` with the standard features and the task name in its info."""
    from datasets import Dataset, DatasetInfo

    parallel = SOURCE_ID in columns
    features = features_for(label_names, parallel)
    info = DatasetInfo(dataset_name=task, features=features)
    ordered = {name: columns[name] for name in features}
    return Dataset.from_dict(ordered, features=features, info=info)


def label_names_of(dataset: Dataset) -> tuple[str, ...]:
    """The corpus' label names in label-id order."""
    return tuple(dataset.features["label"].names)


def select_rows(dataset: Dataset, langs: Iterable[str] | None = None, splits: Iterable[str] | None = None) -> Dataset:
    """Rows whose ``lang`` and ``split`` are in the given sets (``None``: any), without a Python loop.

    ``Dataset.filter`` would call Python per batch; an Arrow mask and ``select`` take milliseconds
    even on all of SIB-200.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if langs is None and splits is None:
        return dataset
    arrow = dataset.with_format("arrow")
    mask = np.ones(len(dataset), dtype=bool)
    for column, wanted in (("lang", langs), ("split", splits)):
        if wanted is not None:
            hit = pc.is_in(arrow[column], value_set=pa.array(sorted(set(wanted)), pa.string()))
            mask &= np.asarray(hit.to_numpy(), dtype=bool)
    keep = np.flatnonzero(mask)
    if len(keep) == len(dataset):
        return dataset
    return dataset.select(keep)


def column_values(dataset: Dataset, name: str) -> list:
    """One column as a Python list (one Arrow conversion, not a row-by-row read)."""
    return dataset.with_format("arrow")[name].to_pylist()
