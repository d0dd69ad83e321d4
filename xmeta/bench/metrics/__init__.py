"""Metric modules that ship inside xmeta, loaded with ``evaluate.load(<local folder>)``.

Each metric is ``metrics/<name>/<name>.py`` holding an ``evaluate.Metric`` subclass. Loading by
local path never touches the Hugging Face Hub, so the benchmark works offline
(``HF_HUB_OFFLINE=1``), where ``evaluate.load("accuracy")`` would fail.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from xmeta.registry import did_you_mean

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES: tuple[str, ...] = ("accuracy", "macro_f1")


def metric_path(name: str) -> Path:
    """The folder of a shipped metric module (what ``evaluate.load`` is given)."""
    if name not in METRIC_NAMES:
        raise KeyError(did_you_mean(name, list(METRIC_NAMES), "metric"))
    return METRICS_DIR / name


@cache
def load_metric(name: str) -> Any:
    """The shipped metric ``name`` as an ``evaluate.EvaluationModule`` (cached per process).

    ``keep_in_memory=True`` keeps ``compute`` from writing an Arrow file per call: the benchmark
    computes two metrics per episode, thousands of times in a run.
    """
    import evaluate

    return evaluate.load(str(metric_path(name)), keep_in_memory=True)


def episode_scores(predictions: list[int], references: list[int], n_way: int) -> dict[str, float]:
    """Accuracy and macro-F1 (over all ``n_way`` episode classes) of one episode's queries."""
    acc = load_metric("accuracy").compute(predictions=predictions, references=references)["accuracy"]
    f1 = load_metric("macro_f1").compute(predictions=predictions, references=references, labels=list(range(n_way)))
    return {"accuracy": float(acc), "macro_f1": float(f1["macro_f1"])}
