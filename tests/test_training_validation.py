"""Meta-validation (xmeta.training.validation) and run selection (eval/select_runs.py)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from const_learner import ConstLearner

from xmeta.training.validation import score, validate, validation_episodes

ROOT = Path(__file__).resolve().parents[1]


def test_validation_episodes_are_dev_only_and_fixed(data_dir):
    langs = ["nya_Latn", "kon_Latn"]
    eps = validation_episodes(
        "sib200", langs, n_way=7, k_shot=5, q_query=5, episodes_per_lang=3, data_dir=str(data_dir)
    )
    assert [e.lang for e in eps] == ["nya_Latn"] * 3 + ["kon_Latn"] * 3
    for ep in eps:
        uids = [e.uid for e in ep.support + ep.query]
        assert all(":dev:" in u for u in uids) and len(set(uids)) == len(uids)
        assert not {e.source_id for e in ep.support} & {e.source_id for e in ep.query}
    again = validation_episodes(
        "sib200", langs, n_way=7, k_shot=5, q_query=5, episodes_per_lang=3, data_dir=str(data_dir)
    )
    assert again == eps


def test_score_weights_languages_equally_and_brackets_the_mean(data_dir):
    eps = validation_episodes("sib200", ["nya_Latn", "kon_Latn"], n_way=7, k_shot=5, q_query=5, episodes_per_lang=4,
                              data_dir=str(data_dir))  # fmt: skip
    accs = [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0]
    s = score(eps, accs)
    assert s.per_lang == pytest.approx({"nya_Latn": 0.5, "kon_Latn": 1.0})
    assert s.accuracy == pytest.approx(0.75) and s.ci[0] < 0.75 < s.ci[1] and s.ci[1] <= 1.0
    assert s.episodes == 8 and s.queries == sum(len(e.query) for e in eps)
    # a constant learner: the fraction of class-0 queries, computed independently
    const = validate(ConstLearner(), eps)
    want = np.mean([np.mean([np.mean([q.label == 0 for q in e.query]) for e in eps[i : i + 4]]) for i in (0, 4)])
    assert const.accuracy == pytest.approx(want)


@pytest.mark.slow
def test_select_runs_ranks_the_shipped_default_and_writes_resumable_results(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "sel"
    argv = ["select_runs.py", "default", "--langs", "nya_Latn,kon_Latn", "--episodes", "2", "--data-dir",
            str(data_dir), "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "eval" / "select_runs.py"), run_name="__main__")
    assert exit_.value.code == 0
    result = json.loads((out / "results.json").read_text())
    (run,) = result["runs"]
    assert run["algorithm"] == "protonet" and run["episodes"] == 4 and 0.4 < run["accuracy"] <= 1.0
    assert "`default`" in (out / "results.md").read_text()
    before = (out / "runs" / "default.json").stat().st_mtime_ns
    with pytest.raises(SystemExit):
        runpy.run_path(str(ROOT / "eval" / "select_runs.py"), run_name="__main__")
    assert (out / "runs" / "default.json").stat().st_mtime_ns == before  # scored once, reused
    # A fine-tuned variant scored by another invocation stays in the ranking of the next one.
    monkeypatch.setattr(sys, "argv", argv + ["--finetune", "1:0.01"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(ROOT / "eval" / "select_runs.py"), run_name="__main__")
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit):
        runpy.run_path(str(ROOT / "eval" / "select_runs.py"), run_name="__main__")
    ranked = {r["run"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert set(ranked) == {"default", "meta-ft[1:0.01]:default"}
    assert ranked["meta-ft[1:0.01]:default"]["algorithm"] == "protonet, fine-tuned 1 steps at lr 0.01"
    assert "`meta-ft[1:0.01]:default`" in (out / "results.md").read_text()
    # A prediction ensemble of the run with itself is scored as the run itself.
    monkeypatch.setattr(sys, "argv", argv + ["--ensemble", "default+default"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(ROOT / "eval" / "select_runs.py"), run_name="__main__")
    ranked = {r["run"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    ens = ranked["meta-ens:default+default"]
    assert ens["algorithm"] == "ensemble of 2: protonet + protonet" and ens["per_lang"] == ranked["default"]["per_lang"]
    # Every run's paired difference to a reference run: the fine-tuned variant against the run itself.
    monkeypatch.setattr(sys, "argv", argv + ["--finetune", "1:0.01", "--reference", "default"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(ROOT / "eval" / "select_runs.py"), run_name="__main__")
    md = (out / "results.md").read_text()
    assert "difference to `default` (paired, points) |" in md and "--reference default" in md
    (row,) = [line for line in md.splitlines() if line.startswith("| `default` |")]
    assert row.endswith("| – |")  # the reference against itself
    monkeypatch.setattr(sys, "argv", argv + ["--reference", "runs/nope"])
    with pytest.raises(SystemExit, match="--reference runs/nope: not one of the runs given"):
        runpy.run_path(str(ROOT / "eval" / "select_runs.py"), run_name="__main__")
