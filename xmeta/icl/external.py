"""Predictions made elsewhere (e.g. by a hosted LLM), answered on the same episodes by uid.

A predictions file is JSONL (one ``{"uid": ..., "label": ...}`` object per line) or CSV/TSV with
a header holding ``uid`` and ``label`` columns; ``label`` is a label *name* (episode label ids
differ between episodes, names do not). An optional ``text`` column lets ``predict(texts)`` find
uids from texts. Queries without a prediction (or with a label outside the episode) get label id
``-1`` and uniform probabilities, so they count as errors, and are counted and logged.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmeta.errors import InputError, XmetaError
from xmeta.interfaces import Episode, Example, Prediction, label_names_of

logger = logging.getLogger(__name__)

MISSING = -1


class ExternalPredictions(Mapping[str, str]):
    """uid -> predicted label name, read from ``path`` (see :func:`load_external_predictions`)."""

    def __init__(self, labels: Mapping[str, str], texts: Mapping[str, str] | None = None, path: Path | None = None):
        self.labels = dict(labels)
        self.texts = dict(texts or {})
        self.path = path

    def __getitem__(self, uid: str) -> str:
        return self.labels[uid]

    def __iter__(self) -> Iterator[str]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"ExternalPredictions({len(self)} uids from {self.path})"


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) pairs from a JSONL or CSV/TSV file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(f"{path}:{lineno}: invalid JSON: {err.msg}") from None
                if not isinstance(record, dict):
                    raise InputError(f"{path}:{lineno}: expected a JSON object with uid and label")
                yield lineno, record
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            missing = {"uid", "label"} - set(reader.fieldnames or [])
            if missing:
                raise InputError(f"{path}:1: header lacks column(s) {sorted(missing)} (has {reader.fieldnames})")
            for record in reader:
                # The header is line 1; DictReader counts physical lines, quoted newlines included.
                yield reader.line_num, record
    else:
        raise InputError(f"{path}: unsupported predictions format {suffix!r}; use .jsonl, .csv or .tsv")


def load_external_predictions(path: str | Path) -> ExternalPredictions:
    """Read ``{uid, label}`` predictions (label names) from JSONL or CSV/TSV.

    Args:
        path: The predictions file.

    Returns:
        The uid -> label-name mapping (plus uid -> text where a ``text`` column exists).

    Raises:
        InputError: Missing file, bad JSON, missing or empty uid/label, a non-string label,
            or one uid with two different labels; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"predictions file not found: {path}")
    labels: dict[str, str] = {}
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, record in _rows(path):
        uid, label = record.get("uid"), record.get("label")
        if uid is None or (isinstance(uid, str) and not uid.strip()):
            raise InputError(f"{path}:{lineno}: missing uid")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise InputError(f"{path}:{lineno}: missing label for uid {uid!r}")
        if not isinstance(label, str):
            # Label ids are episode-local, so a number cannot be mapped back to a class safely.
            raise InputError(f"{path}:{lineno}: label must be a label name, got {label!r}")
        uid, label = str(uid).strip(), label.strip()
        if uid in labels and labels[uid] != label:
            raise InputError(
                f"{path}:{lineno}: uid {uid!r} has label {label!r} here but {labels[uid]!r} on line {first_line[uid]}"
            )
        labels[uid] = label
        first_line.setdefault(uid, lineno)
        if record.get("text"):
            texts[uid] = str(record["text"])
    if not labels:
        raise InputError(f"{path}: no predictions found")
    logger.info("read %d external predictions from %s", len(labels), path)
    return ExternalPredictions(labels, texts, path)


@dataclass
class ExternalPrediction(Prediction):
    """A :class:`Prediction` with coverage: unanswered queries have label ``-1``, uniform probs.

    Attributes:
        missing: ``(n,)`` True where the file has no prediction for the query's uid.
        invalid: ``(n,)`` True where the predicted label is not one of the episode's labels.
    """

    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    invalid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def n_missing(self) -> int:
        return int(self.missing.sum())

    @property
    def n_invalid(self) -> int:
        return int(self.invalid.sum())

    def names(self) -> list[str | None]:  # type: ignore[override]
        """Predicted label names; ``None`` where there is no usable prediction."""
        return [self.label_names[i] if i >= 0 else None for i in self.labels.tolist()]


def _lookup(label_names: Sequence[str]) -> dict[str, int]:
    # Hosted LLMs vary case and spacing ("Science/Technology "), never the label itself.
    return {name.strip().casefold(): i for i, name in enumerate(label_names)}


def predict_uids(predictions: Mapping[str, str], uids: Sequence[str], label_names: Sequence[str]) -> ExternalPrediction:
    """Look up ``uids`` in ``predictions`` and map label names to episode label ids.

    Args:
        predictions: uid -> label name.
        uids: Query uids in order.
        label_names: The episode's labels in label-id order.

    Returns:
        Labels (``-1`` where missing or invalid), one-hot or uniform probabilities, and coverage.
    """
    index = _lookup(label_names)
    n, k = len(uids), len(label_names)
    labels = np.full(n, MISSING, dtype=np.int64)
    probs = np.full((n, k), 1.0 / k)
    missing = np.zeros(n, dtype=bool)
    invalid = np.zeros(n, dtype=bool)
    for i, uid in enumerate(uids):
        name = predictions.get(uid)
        if name is None:
            missing[i] = True
            continue
        j = index.get(name.strip().casefold())
        if j is None:
            invalid[i] = True
            continue
        labels[i] = j
        probs[i] = 0.0
        probs[i, j] = 1.0
    if missing.any() or invalid.any():
        logger.warning(
            "external predictions: %d of %d queries missing, %d with a label outside %s",
            int(missing.sum()),
            n,
            int(invalid.sum()),
            list(label_names),
        )
    return ExternalPrediction(labels, probs, tuple(label_names), missing=missing, invalid=invalid)


def score_external(predictions: Mapping[str, str], episode: Episode) -> ExternalPrediction:
    """The external predictions for ``episode``'s queries, by uid."""
    return predict_uids(predictions, [q.uid for q in episode.query], episode.label_names)


@dataclass
class Coverage:
    """Running counts over every query an external learner was asked about."""

    queries: int = 0
    missing: int = 0
    invalid: int = 0

    def add(self, pred: ExternalPrediction) -> None:
        self.queries += len(pred.labels)
        self.missing += pred.n_missing
        self.invalid += pred.n_invalid


class ExternalPredictor:
    """Answers one episode from an external predictions file; ``support`` is only used for labels."""

    def __init__(
        self,
        predictions: ExternalPredictions,
        label_names: tuple[str, ...],
        uid_by_text: Mapping[str, str],
        coverage: Coverage,
    ) -> None:
        self.predictions = predictions
        self.label_names = label_names
        self._uid_by_text = uid_by_text
        self._coverage = coverage

    def predict_examples(self, query: Sequence[Example]) -> ExternalPrediction:
        """Predictions for ``query`` looked up by uid (the exact way; prefer it over ``predict``)."""
        out = predict_uids(self.predictions, [q.uid for q in query], self.label_names)
        self._coverage.add(out)
        return out

    def predict(self, texts: Sequence[str]) -> ExternalPrediction:
        """Predictions for ``texts``, mapped to uids by the file's ``text`` column or ``uid_by_text``.

        Raises:
            XmetaError: No text -> uid mapping is available, or a text is not in it.
        """
        if not self._uid_by_text:
            raise XmetaError(
                f"{self.predictions.path}: predictions have no text column; call predict_examples(query) "
                "or give ExternalLearner a uid_by_text mapping"
            )
        # An unknown text is an unanswered query, like an unknown uid; a placeholder uid marks it.
        uids = [self._uid_by_text.get(t, f"<no uid for text {i}>") for i, t in enumerate(texts)]
        out = predict_uids(self.predictions, uids, self.label_names)
        self._coverage.add(out)
        return out


class ExternalLearner:
    """The ``Learner`` face of an external predictions file, for side-by-side benchmark tables.

    Args:
        predictions: Loaded predictions or a path to them.
        uid_by_text: Optional text -> uid mapping for ``predict(texts)`` (else the file's ``text``
            column is used).
        name: A label for reports (defaults to the file name).
    """

    def __init__(
        self,
        predictions: ExternalPredictions | str | Path,
        *,
        uid_by_text: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(predictions, ExternalPredictions):
            predictions = load_external_predictions(predictions)
        self.predictions = predictions
        self.uid_by_text = (
            dict(uid_by_text) if uid_by_text is not None else {t: u for u, t in predictions.texts.items()}
        )
        self.name = name or (predictions.path.stem if predictions.path else "external")
        self.coverage = Coverage()

    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> ExternalPredictor:
        """A predictor for the episode whose labels ``support`` defines (nothing is learned)."""
        return ExternalPredictor(self.predictions, label_names_of(support), self.uid_by_text, self.coverage)
