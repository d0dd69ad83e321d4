"""results.md rendering, plots, published numbers kept apart, and the cost probes."""

from __future__ import annotations

import mmap
import time
from pathlib import Path

import numpy as np
import pytest

from xmeta.bench.cost import PeakRSS, current_rss_mb
from xmeta.bench.plots import write_plots
from xmeta.bench.published import load_published
from xmeta.bench.report import render_markdown


def method(acc: dict[str, float | None], display: str, failed: dict[str, str] | None = None) -> dict:
    per_lang = {}
    for lang, a in acc.items():
        if a is None:
            per_lang[lang] = {
                "status": "failed",
                "error": (failed or {})[lang],
                "accuracy": None,
                "ci95": None,
                "macro_f1": None,
            }
        else:
            per_lang[lang] = {"status": "ok", "accuracy": a, "ci95": [a - 0.05, a + 0.03], "macro_f1": a - 0.1}
    ok = [a for a in acc.values() if a is not None]
    return {
        "display": display,
        "mean_accuracy": float(np.mean(ok)),
        "mean_ci95": [float(np.mean(ok)) - 0.02, float(np.mean(ok)) + 0.02],
        "mean_macro_f1": float(np.mean(ok)) - 0.1,
        "n_langs": len(ok),
        "complete": len(ok) == len(acc),
        "failed": failed or {},
        "per_lang": per_lang,
        "cost": {"seconds_per_episode": 0.5, "ms_per_query": 12.0, "peak_rss_mb": 900.0, "load_seconds": 3.0},
    }


def results(k: int = 5) -> dict:
    return {
        "task": "sib200", "n_way": 7, "k_shot": k, "q_query": 5, "episodes_per_lang": 20, "seed": 0,
        "support_split": "dev", "query_split": "test", "langs": ["swh_Latn", "yor_Latn"],
        "methods": {
            "frozen-proto": method({"swh_Latn": 0.412, "yor_Latn": 0.30}, "frozen-proto"),
            "meta:runs/x": method({"swh_Latn": 0.6, "yor_Latn": None}, "meta:runs/x (protomaml)", {"yor_Latn": "OSError: x"}),
        },
        "episodes": {"swh_Latn": [], "yor_Latn": []},
    }  # fmt: skip


def test_markdown_table_rows_languages_columns_methods() -> None:
    md = render_markdown(results())
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| language |"))
    assert header == "| language | frozen-proto | meta:runs/x (protomaml) |"
    swh = next(line for line in lines if line.startswith("| swh_Latn |"))
    assert swh == "| swh_Latn | 41.2 ± 4.0 | 60.0 ± 4.0 |"  # half-width of [acc-5, acc+3]
    assert "| yor_Latn | 30.0 ± 4.0 | failed |" in md
    assert "| **mean** | **35.6 ± 2.0** | **60.0 ± 2.0** (1/2 langs)† |" in md
    assert "`meta:runs/x` on yor_Latn: OSError: x" in md
    assert "| frozen-proto | 0.500 | 12.00 | 900 | 3.0 |" in md


def test_published_numbers_are_a_separate_labelled_table(data_dir: Path) -> None:
    res = results()
    res["published_other_protocols"] = load_published(
        data_dir / "sib200" / "published_results.csv", ["swh_Latn", "yor_Latn", "xxx_Latn"]
    )
    md = render_markdown(res)
    ours, _, theirs = md.partition("## Published SIB-200 numbers (other protocols")
    assert theirs and "OTHER protocols" in theirs and "XLM-R large (supervised)" in theirs
    assert "85.8" in theirs and "85.8" not in ours  # swh XLM-R large, never in our rows
    assert "No published numbers for: xxx_Latn" in theirs
    pub = res["published_other_protocols"]
    assert pub["per_lang"]["yor_Latn"]["gpt4_zeroshot"] == pytest.approx(40.5)
    assert pub["mean"]["xlmr_large"] == pytest.approx((85.8 + 49.6) / 2)


def test_multi_k_report_and_plots(tmp_path: Path) -> None:
    res = {"task": "sib200", "k_shot": [1, 5], "by_k": {"1": results(1), "5": results(5)}}
    md = render_markdown(res)
    assert "## K = 1" in md and "## K = 5" in md and "## Mean accuracy vs K" in md
    paths = write_plots(res, tmp_path)
    assert sorted(p.name for p in paths) == ["accuracy_by_lang_k1.png", "accuracy_by_lang_k5.png", "accuracy_vs_k.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_peak_rss_sees_an_allocation_inside_the_block() -> None:
    assert current_rss_mb() > 0
    with PeakRSS(interval=0.005) as rss:
        # A fresh anonymous mapping, every page touched: malloc/numpy caches in a long test process
        # could otherwise serve the block from memory that is already resident.
        block = mmap.mmap(-1, 40_000_000)
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
        time.sleep(0.05)
        block.close()
    assert rss.peak_mb - rss.baseline_mb > 30


def test_plot_labels_drop_run_directories() -> None:
    from xmeta.bench.plots import short_label

    assert short_label("meta:eval/results/meta_runs/protonet (protonet)") == "meta:protonet (protonet)"
    assert short_label("meta-ens:runs/a/final+/abs/b (ensemble of 2)") == "meta-ens:final+b (ensemble of 2)"
    assert short_label("icl:gemma-3-270m") == "icl:gemma-3-270m"
