"""eval/perf/run.py: the config parses into measurements, and targets come out of their results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

PERF = Path(__file__).resolve().parents[1] / "eval" / "perf"
sys.path.insert(0, str(PERF))

import run  # noqa: E402  (eval/perf/run.py)
from report import render_markdown  # noqa: E402


def test_config_plans_every_measurement_once() -> None:
    for quick in (False, True):
        cfg = run.load_settings(PERF / "config.yaml", quick=quick, threads=1, episodes=2)
        specs = run.plan(cfg)
        names = [s["name"] for s in specs]
        assert len(names) == len(set(names)) and names[0] == "matmul" and names[-1] == "matmul_end"
        assert {k: v for k, v in specs[-1].items() if k != "name"} == {k: v for k, v in specs[0].items() if k != "name"}
        episodes = [s for s in specs if s["kind"] == "episode"]
        assert episodes and all(s["episodes"] == 2 and s["threads"] == 1 for s in episodes)
        by_name = {s["name"]: s for s in specs}
        assert by_name["maml/all/uncached/fp32"]["recompute"] is False  # the straightforward baseline
        assert by_name["maml/all/cached/fp32"]["recompute"] is True
        assert by_name["maml/top4/cached/fp32/plain"]["recompute"] is False


def test_targets_are_ratios_of_the_named_measurements() -> None:
    ep = lambda s, mem=1000.0, **kw: {"seconds_per_episode": s, "peak_rss_mb": mem, "precision": "fp32", **kw}  # noqa: E731
    results = {
        "matmul": {"fp32": {"gflops": 100.0}, "bf16": {"gflops": 400.0}},
        "protonet/top4/uncached/fp32": ep(3.0),
        "protonet/top4/cached/fp32": ep(1.0, flops_model=70e9, flops_executed=70e9, first_loss=1.0),
        "protonet/top4/cached/bf16": {**ep(0.5, flops_model=70e9), "precision": "bf16"},
        "fomaml/top4/uncached/fp32": ep(10.0),
        "fomaml/top4/cached/fp32": ep(4.0),
        "fomaml/all/cached/fp32": ep(9.0, mem=2000.0),
        "maml/top4/cached/fp32": ep(8.0, mem=1800.0),
        "maml/all/cached/fp32": ep(20.0, mem=3000.0),
        "higher/top4/uncached/fp32": ep(16.0, mem=6000.0),
        "default/top4/uncached/fp32": ep(4.0),
        "default/top4/cached/default": ep(1.0),
        "latency/default": {"query_seconds_batched": 0.02, "query_seconds_single": 0.03},
        "icl": {"query_seconds_batched": 0.4, "query_seconds_single": 0.4},
        "icl_bf16": {"query_seconds_batched": 0.2, "query_seconds_single": 0.2},
    }
    run.derive(results)
    values, detail = run.targets(results)
    assert values["cache_speedup"] == 2.5  # the smaller of protonet (3.0) and fomaml (2.5)
    assert values["maml_memory_ratio"] == 1.8  # the larger of top4 (1.8 GB / 1 GB) and all (3 GB / 2 GB)
    assert values["protonet_mfu"] == 0.7 and values["protonet_mfu_bf16"] == 0.35  # 140 GFLOP/s of 400
    assert values["default_episode_speedup"] == 4.0 and detail["default_episode_speedup"]["met"] is False
    assert values["vs_higher_speedup"] == 2.0 and values["vs_higher_memory_ratio"] == 0.3
    assert values["query_speedup_vs_icl"] == 20.0
    assert detail["query_speedup_vs_icl"]["by_setting"]["default/batched_vs_icl_bf16"] == 10.0
    report = {"quick": True, "started": "t0", "finished": "t1", "measurements": results, "targets": values,
              "targets_detail": detail, "machine": {"torch": "x", "transformers": "y", "python": "3", "threads": 1,
              "platform": "p", "load_average_before": (0, 0, 0), "load_average_after": (0, 0, 0)}}  # fmt: skip
    md = render_markdown(report)
    assert "| `cache_speedup` | 2.500 | >= 1.8 | yes |" in md and "protonet/top4/cached/fp32" in md


def test_fractions_of_peak_divide_by_the_better_matmul_measurement_at_each_precision() -> None:
    # a contended start (fp32 80) and a contended end (bf16 300): each precision takes its better one
    results = {
        "matmul": {"fp32": {"gflops": 80.0}, "bf16": {"gflops": 400.0}},
        "matmul_end": {"fp32": {"gflops": 100.0}, "bf16": {"gflops": 300.0}},
        "protonet/top4/cached/fp32": {"seconds_per_episode": 1.0, "precision": "fp32", "flops_model": 70e9},
        "protonet/top4/cached/bf16": {"seconds_per_episode": 0.5, "precision": "bf16", "flops_model": 70e9},
    }
    assert {p: r["measurement"] for p, r in run.matmul_peaks(results).items()} == {
        "fp32": "matmul_end",
        "bf16": "matmul",
    }
    run.derive(results)
    assert results["protonet/top4/cached/fp32"]["mfu"] == 0.7 and results["protonet/top4/cached/bf16"]["mfu"] == 0.35
    del results["matmul_end"]  # a report from before the second measurement
    run.derive(results)
    assert results["protonet/top4/cached/fp32"]["mfu"] == 0.875


def test_predict_vs_plain_hf_is_the_ratio_of_interleaved_passes() -> None:
    default = run.default_precision()
    pred = lambda sps, prec: {"sentences_per_s": sps, "precision": prec, "flops_per_sentence": 2e9}  # noqa: E731
    results = {
        "matmul": {"fp32": {"gflops": 100.0}, "bf16": {"gflops": 400.0}},
        "predict/xmeta/fp32": pred(40.0, "fp32"),
        "predict/xmeta/bf16": pred(80.0, "bf16"),
        # separate process, minutes later, on a faster moment of the host: 80 / 25 = 3.2 (or 1.6)
        "predict/plain_hf/fp32": {"sentences_per_s": 25.0, "precision": "fp32",
                                  "interleaved": {"xmeta_precision": default, "ratio": 4.2, "ratio_by_round": [4.3, 4.2]}},
    }  # fmt: skip
    run.derive(results)
    values, detail = run.targets(results)
    assert values["predict_vs_plain_hf"] == 4.2 and detail["predict_vs_plain_hf"]["met"] is True
    assert detail["predict_vs_plain_hf"]["by_setting"]["bf16/fp32"] == 3.2
    assert values["predict_floor_fraction"] == 0.8 and values["predict_floor_fraction_bf16"] == 0.4
    # a report without the interleaved passes falls back on the separate rows
    del results["predict/plain_hf/fp32"]["interleaved"]
    values, _ = run.targets(results)
    assert values["predict_vs_plain_hf"] == {"bf16": 3.2, "fp32": 1.6}[default]


def test_update_merges_into_the_previous_report_and_recomputes_targets(tmp_path) -> None:
    ep = {"seconds_per_episode": 3.0, "peak_rss_mb": 1000.0, "precision": "fp32"}
    old = {"started": "earlier", "machine": {"load_average_before": [0.1, 0.1, 0.1]},
           "measurements": {"matmul": {"fp32": {"gflops": 100.0}, "bf16": {"gflops": 200.0}}, "protonet/top4/uncached/fp32": ep,
                            "protonet/top4/cached/fp32": {**ep, "seconds_per_episode": 1.0},
                            "fomaml/top4/uncached/fp32": ep, "fomaml/top4/cached/fp32": {**ep, "seconds_per_episode": 1.5}}}  # fmt: skip
    (tmp_path / "perf.json").write_text(json.dumps(old), encoding="utf-8")
    # a pattern that matches nothing: no measurement runs, the old ones are kept and re-derived
    assert run.main(["--only", "no-such-measurement", "--update", "--out", str(tmp_path)]) == 0
    new = json.loads((tmp_path / "perf.json").read_text(encoding="utf-8"))
    assert new["measurements"] == old["measurements"] and new["started"] == "earlier"
    assert new["targets"]["cache_speedup"] == 2.0 and new["updates"][0]["measurements"] == []
    assert (tmp_path / "perf.md").exists()
