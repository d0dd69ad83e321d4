"""Accuracy as an ``evaluate`` metric module that ships inside xmeta.

The hub's ``accuracy`` module cannot be fetched offline (and needs scikit-learn); this one is
loaded with ``evaluate.load(<path of this folder>)`` and needs only numpy.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy: the fraction of predictions equal to their reference."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): gold labels.
Returns:
    accuracy (float): correct / total, in [0, 1].
Examples:
    >>> m = evaluate.load("xmeta/bench/metrics/accuracy")
    >>> m.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""
_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Fraction of exact label matches."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions: list[int], references: list[int]) -> dict[str, float]:
        pred = np.asarray(predictions)
        ref = np.asarray(references)
        if pred.size == 0:
            raise ValueError("accuracy of zero predictions is undefined")
        return {"accuracy": float((pred == ref).mean())}
