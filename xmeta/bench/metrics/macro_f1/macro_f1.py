"""Macro-averaged F1 as an ``evaluate`` metric module that ships inside xmeta.

Classes are the union of labels seen in references and predictions (scikit-learn's default for
``f1_score(average="macro")``); a class with no true and no predicted positives cannot occur in
that union, and a class with precision + recall = 0 scores 0 (scikit-learn's zero_division=0).
Pass ``labels=[...]`` to fix the class set, e.g. to all N classes of an episode.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Macro-F1: the unweighted mean over classes of per-class F1."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): gold labels.
    labels (list of int, optional): the classes to average over (default: every label seen).
Returns:
    macro_f1 (float): in [0, 1].
Examples:
    >>> m = evaluate.load("xmeta/bench/metrics/macro_f1")
    >>> m.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'macro_f1': 0.6666666666666666}
"""
_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MacroF1(evaluate.Metric):
    """Unweighted mean of per-class F1 scores."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(
        self, predictions: list[int], references: list[int], labels: Sequence[int] | None = None
    ) -> dict[str, float]:
        pred = np.asarray(predictions)
        ref = np.asarray(references)
        if pred.size == 0:
            raise ValueError("macro-F1 of zero predictions is undefined")
        classes = np.unique(np.concatenate([pred, ref])) if labels is None else np.asarray(list(labels))
        f1s = []
        for c in classes:
            tp = float(np.sum((pred == c) & (ref == c)))
            fp = float(np.sum((pred == c) & (ref != c)))
            fn = float(np.sum((pred != c) & (ref == c)))
            # F1 = 2TP / (2TP + FP + FN); 0 when the class is neither predicted nor present.
            denom = 2 * tp + fp + fn
            f1s.append(2 * tp / denom if denom > 0 else 0.0)
        return {"macro_f1": float(np.mean(f1s))}
