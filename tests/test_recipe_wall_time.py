"""eval/perf/recipe_wall_time.py: timings from a run's metrics, and the extrapolation to a run's length."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from test_recipe_meta_train import overrides, tiny_setup  # noqa: F401  (the fixture, by name)

from xmeta.cli import main as xmeta_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval" / "perf"))
import recipe_wall_time as rwt  # noqa: E402  (eval/perf/recipe_wall_time.py)


def test_timings_split_steps_validation_and_startup() -> None:
    # Steps end at 3 s (warm-up), 5 s, 7 s, 9 s; batch 4 -> episodes_per_s = 4k / end_k.
    ends = [3.0, 5.0, 7.0, 9.0]
    metrics = [{"step": k, "episodes_per_s": 4 * k / end} for k, end in enumerate(ends, start=1)]
    t = rwt.timings(metrics, batch=4, train_seconds=39.0, process_seconds=49.0)
    assert t == pytest.approx({"first_step_s": 3.0, "step_s": 2.0, "validation_s": 30.0, "startup_s": 10.0})
    # 100 steps, 4 validations: 10 + 3 + 99 x 2 + 4 x 30.
    assert rwt.extrapolate(t, 100, 4) == pytest.approx(331.0)
    with pytest.raises(ValueError, match="consecutive"):
        rwt.timings(metrics[1:], batch=4, train_seconds=39.0, process_seconds=49.0)


@pytest.mark.parametrize(
    ("steps", "val_every", "max_steps", "expected"),
    [(850, 50, 1500, 17), (101, 10, 150, 10), (250, 25, 250, 10), (120, 50, 120, 3), (7, 0, 7, 0)],
)
def test_validations_counts_every_val_every_and_the_last_step(steps, val_every, max_steps, expected) -> None:
    assert rwt.validations(steps, val_every, max_steps) == expected


@pytest.mark.slow
def test_retimes_a_run_from_its_recorded_config(tiny_setup, tmp_path) -> None:  # noqa: F811
    data, model = tiny_setup
    out = tmp_path / "run"
    assert xmeta_main(["train", *overrides(data, model, out)]) == 0  # 6 steps, validation every 3
    runs = tmp_path / "runs"
    shutil.copytree(out / "final", runs / "tiny")
    report_path = tmp_path / "walltimes.json"
    assert rwt.main(["tiny", "--steps", "3", "--runs-dir", str(runs), "--out", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    (row,) = report["rows"]
    assert (row["run"], row["timed_steps"], row["run_steps"], row["run_validations"]) == ("tiny", 3, 6, 2)
    assert row["step_s"] > 0 and row["validation_s"] > 0 and row["startup_s"] > 0
    t = {k: row[k] for k in ("first_step_s", "step_s", "validation_s", "startup_s")}
    assert row["estimate_min"] == pytest.approx(rwt.extrapolate(t, 6, 2) / 60, abs=0.06)
    assert row["recorded_min"] == round(
        json.loads((out / "final" / "training.json").read_text())["train_seconds"] / 60, 1
    )
    assert "| `tiny` | " in report_path.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="no committed run"):
        rwt.main(["missing", "--runs-dir", str(runs), "--out", str(report_path)])
