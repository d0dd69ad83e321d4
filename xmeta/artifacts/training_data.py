"""Which sentences a meta-trained model has seen, stored with it for the leakage check.

``training_data.json`` lists, for every ``<task>:<lang>:<split>`` that meta-training or its
validation read, the row keys and the rows' ``source_id`` (the sentence id shared by translations
in a parallel corpus). Identical key lists (SIB-200's are the same in every language) are stored
once, so the 50-language default takes ~30 KB. With it, ``xmeta bench --methods meta:<run>`` checks
leakage against a data directory that holds only the evaluation languages. This module is torch-free.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmeta.artifacts.manifest import ArtifactError

Record = tuple[str, "str | None"]  # (uid, source_id)


@dataclass(frozen=True)
class TrainingData:
    """The data a meta-trained model saw: task, ``{lang: splits}``, and (when recorded) every row id.

    Attributes:
        task: the corpus name (``sib200``).
        splits_by_lang: the splits read per language (training and validation together).
        groups: ``{"<task>:<lang>:<split>": [(key, source_id), ...]}``; empty for a run written
            before ids were recorded (the benchmark then re-reads those splits from the data directory).
    """

    task: str
    splits_by_lang: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    groups: Mapping[str, tuple[tuple[str, str | None], ...]] = field(default_factory=dict)

    @property
    def has_ids(self) -> bool:
        return bool(self.groups)

    @classmethod
    def from_records(cls, task: str, records: Iterable[Record]) -> TrainingData:
        """Group ``(uid, source_id)`` pairs (uids ``<task>:<lang>:<split>:<key>``) by their prefix."""
        groups: dict[str, dict[str, str | None]] = {}
        for uid, source_id in records:
            prefix, _, key = uid.rpartition(":")
            groups.setdefault(prefix, {})[key] = source_id
        splits: dict[str, set[str]] = {}
        for prefix in groups:
            parts = prefix.split(":")
            if len(parts) >= 3:
                splits.setdefault(parts[-2], set()).add(parts[-1])
        return cls(
            task,
            {lang: tuple(sorted(s)) for lang, s in sorted(splits.items())},
            {p: tuple(sorted(rows.items())) for p, rows in sorted(groups.items())},
        )

    def leakage_records(self, role: str = "train") -> list[Record]:
        """``(uid, source_id)`` of every recorded row (``xmeta.data.leakage`` reads this)."""
        return [(f"{prefix}:{key}", sid) for prefix, rows in self.groups.items() for key, sid in rows]

    def summary(self) -> dict[str, Any]:
        """What the manifest records (the ids stay in ``training_data.json``)."""
        out: dict[str, Any] = {"task": self.task, "splits_by_lang": self._splits()}
        if self.has_ids:
            out["rows"] = sum(len(r) for r in self.groups.values())
            out["sha256"] = hashlib.sha256(self.to_text().encode("utf-8")).hexdigest()
        return out

    def _splits(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.splits_by_lang.items()}

    def to_text(self) -> str:
        """``training_data.json``: key lists and source-id lists deduplicated across groups."""
        lists: list[Sequence[Any]] = []
        index: dict[str, int] = {}

        def ref(values: Sequence[Any]) -> int:
            token = json.dumps(values)
            if token not in index:
                index[token] = len(lists)
                lists.append(values)
            return index[token]

        groups = {}
        for prefix, rows in self.groups.items():
            keys = [k for k, _ in rows]
            sids = [s for _, s in rows]
            groups[prefix] = {"keys": ref(keys), "source_ids": None if all(s is None for s in sids) else ref(sids)}
        data = {"task": self.task, "splits_by_lang": self._splits(), "groups": groups, "lists": lists}
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n"

    @classmethod
    def from_text(cls, text: str, where: Path | str = "training_data.json") -> TrainingData:
        try:
            data = json.loads(text)
            lists = data["lists"]
            groups = {}
            for prefix, g in data["groups"].items():
                keys = lists[g["keys"]]
                sids = lists[g["source_ids"]] if g["source_ids"] is not None else [None] * len(keys)
                groups[prefix] = tuple(zip(keys, sids))
            splits = {k: tuple(v) for k, v in data["splits_by_lang"].items()}
            return cls(data["task"], splits, groups)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise ArtifactError(f"{where}: invalid training-data record ({err})") from None

    @classmethod
    def union(cls, items: Sequence[TrainingData]) -> TrainingData:
        """What several models saw together (an ensemble's members): the union of their splits and,
        when every member recorded its row ids, of the ids (otherwise the splits are re-read)."""
        tasks = {t.task for t in items}
        if len(tasks) != 1:
            raise ValueError(f"training data of different tasks cannot be merged: {sorted(tasks)}")
        splits: dict[str, set[str]] = {}
        for t in items:
            for lang, names in t.splits_by_lang.items():
                splits.setdefault(lang, set()).update(names)
        groups: dict[str, dict[str, str | None]] = {}
        if all(t.has_ids for t in items):
            for t in items:
                for prefix, rows in t.groups.items():
                    groups.setdefault(prefix, {}).update(rows)
        return cls(
            tasks.pop(),
            {lang: tuple(sorted(v)) for lang, v in sorted(splits.items())},
            {p: tuple(sorted(rows.items())) for p, rows in sorted(groups.items())},
        )

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> TrainingData:
        """Task and splits only (an old run): the benchmark re-reads the rows from the data directory."""
        return cls(str(summary["task"]), {k: tuple(v) for k, v in summary["splits_by_lang"].items()})


def training_data_of(manifest: Any) -> TrainingData | None:
    """What a meta-trained artifact read: its recorded ids, else (an old run) task and splits, else None."""
    path = manifest.training_data_path
    if path is not None:
        return TrainingData.from_text(path.read_text(encoding="utf-8"), path)
    return TrainingData.from_summary(manifest.training) if manifest.training else None
