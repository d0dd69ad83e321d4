"""A prediction ensemble of meta-trained runs: each adapts to the support set on its own, and the
class probabilities of the members are averaged (Dvornik et al., ICCV 2019, ensembles of few-shot
learners).

Unlike a model soup (weights averaged, ``eval/soup.py``), the members need not share an
architecture, an algorithm or a training run; the cost is the sum of theirs (one adaptation and one
forward pass per member), which the benchmark reports as the method's seconds per episode.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xmeta.interfaces import Example, Learner, Prediction, Predictor


class EnsemblePredictor:
    """The members' adapted predictors; ``predict`` averages their probabilities."""

    def __init__(self, members: Sequence[Predictor]) -> None:
        names = {tuple(m.label_names) for m in members}
        if len(names) != 1:
            raise ValueError(f"ensemble members disagree on the label names: {sorted(names)}")
        self.members = list(members)
        self.label_names: tuple[str, ...] = names.pop()

    def predict(self, texts: Sequence[str]) -> Prediction:
        if isinstance(texts, str):
            raise TypeError("predict takes a sequence of texts, not a single string")
        probs = np.mean([m.predict(texts).probs for m in self.members], axis=0)
        labels = probs.argmax(axis=1).astype(np.int64) if len(texts) else np.zeros(0, dtype=np.int64)
        return Prediction(labels, probs.reshape(len(texts), len(self.label_names)), self.label_names)


class EnsembleLearner:
    """Several learners adapted to the same support set, their class probabilities averaged.

    Args:
        members: two or more learners (e.g. ``MetaLearner`` of different runs).
    """

    def __init__(self, members: Sequence[Learner]) -> None:
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = list(members)

    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> EnsemblePredictor:
        return EnsemblePredictor([m.adapt(support, seed=seed) for m in self.members])
