"""The shared vocabulary: examples, episodes, and the learner/predictor protocols.

Every method xmeta compares (meta-learned encoders, fine-tuning, frozen prototypes, in-context
prompting) implements ``Learner.adapt(support) -> Predictor``; that one interface is what makes
the benchmark a fair side-by-side on identical episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Example:
    """One labelled text. ``label`` is the episode-local class id (0..N-1) inside episodes."""

    uid: str
    text: str
    label: int
    label_name: str
    lang: str = "und"
    source_id: str | None = None


@dataclass(frozen=True)
class Episode:
    """An N-way K-shot episode; ``label_names[i]`` is the name of episode class ``i``."""

    index: int
    lang: str
    query_lang: str
    label_names: tuple[str, ...]
    support: tuple[Example, ...]
    query: tuple[Example, ...]
    seed: int = 0

    @property
    def n_way(self) -> int:
        return len(self.label_names)

    def uids(self) -> dict[str, list[str]]:
        return {"support": [e.uid for e in self.support], "query": [e.uid for e in self.query]}


@dataclass
class Prediction:
    """Predicted class ids and an ``(n, N)`` probability matrix over ``label_names``."""

    labels: np.ndarray
    probs: np.ndarray
    label_names: tuple[str, ...] = field(default_factory=tuple)

    def names(self) -> list[str]:
        return [self.label_names[i] for i in self.labels.tolist()]

    def records(self, ndigits: int = 6) -> list[dict]:
        """One ``{"label": name, "scores": {name: probability}}`` per row, probabilities rounded.

        The output format of ``xmeta predict`` and ``xmeta serve`` (both call this, so their numbers agree).
        """
        names = self.label_names
        return [
            {"label": names[label], "scores": {n: round(p, ndigits) for n, p in zip(names, probs)}}
            for label, probs in zip(self.labels.tolist(), self.probs.tolist())
        ]


@runtime_checkable
class Predictor(Protocol):
    label_names: tuple[str, ...]

    def predict(self, texts: Sequence[str]) -> Prediction: ...


@runtime_checkable
class Learner(Protocol):
    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> Predictor: ...


def label_names_of(support: Sequence[Example]) -> tuple[str, ...]:
    """Label names ordered by episode label id; raises if ids are not 0..N-1 or names clash."""
    names: dict[int, str] = {}
    for ex in support:
        if names.setdefault(ex.label, ex.label_name) != ex.label_name:
            raise ValueError(f"label id {ex.label} has two names: {names[ex.label]!r} and {ex.label_name!r}")
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"support label ids must be 0..N-1, got {sorted(names)}")
    if len(names) < 2:
        raise ValueError(f"support needs at least 2 classes, got {len(names)}")
    return tuple(names[i] for i in range(len(names)))
