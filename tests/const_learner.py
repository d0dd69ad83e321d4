"""A learner that always predicts class 0: the benchmark's plumbing without a model (shared by the bench tests)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xmeta.interfaces import Example, Prediction, label_names_of


class ConstPredictor:
    def __init__(self, names: tuple[str, ...]) -> None:
        self.label_names = names

    def predict(self, texts: Sequence[str]) -> Prediction:
        labels = np.zeros(len(texts), int)
        return Prediction(labels, np.eye(len(self.label_names))[labels], self.label_names)


class ConstLearner:
    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> ConstPredictor:
        return ConstPredictor(label_names_of(support))
