"""The evaluate metric modules shipped in xmeta: offline loading and correct values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xmeta.bench.metrics import METRICS_DIR, episode_scores, load_metric, metric_path


def test_metric_modules_load_offline_from_the_package(tmp_path: Path) -> None:
    # A fresh HF cache and every offline switch: only the shipped scripts can make this work.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    code = (
        "from xmeta.bench.metrics import load_metric\n"
        "a = load_metric('accuracy').compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])\n"
        "f = load_metric('macro_f1').compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])\n"
        "print(a['accuracy'], round(f['macro_f1'], 6))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # F1: class 0 = 1, class 1 = 2/3 (one missed), class 2 = 2/3 (one false positive)
    assert out.stdout.split() == ["0.75", str(round((1 + 2 / 3 + 2 / 3) / 3, 6))]


def test_metric_scripts_live_inside_the_package() -> None:
    for name in ("accuracy", "macro_f1"):
        assert (metric_path(name) / f"{name}.py").is_file()
        assert metric_path(name).parent == METRICS_DIR
    with pytest.raises(KeyError, match="Did you mean 'accuracy'"):
        metric_path("acuracy")


def test_accuracy_and_macro_f1_values() -> None:
    acc = load_metric("accuracy")
    assert acc.compute(predictions=[1, 1, 0], references=[1, 0, 0])["accuracy"] == pytest.approx(2 / 3)
    f1 = load_metric("macro_f1")
    # class 0: P=1/1, R=1/2 -> 2/3; class 1: P=1/2, R=1/1 -> 2/3
    assert f1.compute(predictions=[0, 1, 1], references=[0, 0, 1])["macro_f1"] == pytest.approx(2 / 3)
    # fixing the class set counts a never-seen class as F1 = 0
    assert f1.compute(predictions=[0, 1, 1], references=[0, 0, 1], labels=[0, 1, 2])["macro_f1"] == pytest.approx(4 / 9)


def test_macro_f1_matches_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred, ref = rng.integers(0, 7, 50).tolist(), rng.integers(0, 7, 50).tolist()
        ours = load_metric("macro_f1").compute(predictions=pred, references=ref, labels=list(range(7)))["macro_f1"]
        theirs = metrics.f1_score(ref, pred, average="macro", labels=list(range(7)), zero_division=0)
        assert ours == pytest.approx(theirs)


def test_episode_scores_count_invalid_predictions_as_errors() -> None:
    scores = episode_scores([0, -1, 2, 2], [0, 1, 2, 2], n_way=3)
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["macro_f1"] == pytest.approx((1 + 0 + 1) / 3)
