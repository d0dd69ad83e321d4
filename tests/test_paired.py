"""eval/paired.py: paired differences between benchmark methods, on the committed standard benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))

import paired  # noqa: E402  (eval/paired.py)

OUT = ROOT / "eval" / "results" / "sib200_lowres"
SHIPPED = "meta:eval/results/meta_runs/protonet_hr50_xl"


def test_a_method_against_itself_is_exactly_zero_and_the_committed_figures_reproduce() -> None:
    cells = paired.load_cells(OUT)
    assert sorted(cells) == [1, 5, 10] and all(len(cells[k][SHIPPED]) == 25 for k in cells)
    d, (lo, hi) = paired.paired(cells[5][SHIPPED], cells[5][SHIPPED])
    assert d == 0.0 and lo == 0.0 and hi == 0.0
    # ProtoMAML at scale vs the shipped run at K = 5, as README states: +1.2 [+0.8, +1.6] points.
    d, (lo, hi) = paired.paired(cells[5]["meta:eval/results/meta_runs/protomaml_hr50"], cells[5][SHIPPED])
    assert round(100 * d, 1) == 1.2 and lo < d < hi and hi - lo < 0.012  # far tighter than either row's ±0.7
    # The difference of two means is the mean of the differences (languages weigh equally in both).
    mean = lambda by_lang: sum(sum(e["accuracy"] for e in eps) / len(eps) for eps in by_lang.values()) / 25  # noqa: E731
    assert d == pytest.approx(mean(cells[5]["meta:eval/results/meta_runs/protomaml_hr50"]) - mean(cells[5][SHIPPED]))


def test_unknown_methods_are_refused_naming_the_known_ones(capsys) -> None:
    with pytest.raises(SystemExit, match=r"meta:nope: not in .*sib200_lowres \(methods: frozen-proto, logreg"):
        paired.main([str(OUT), "--against", "meta:nope"])
    assert paired.main([str(OUT), "--against", SHIPPED, "--methods", "frozen-proto"]) == 0
    assert "| `frozen-proto` | -17.4 [" in capsys.readouterr().out


def test_a_failed_cell_is_not_silently_dropped(tmp_path, capsys) -> None:
    def cell(method: str, lang: str, accs: list[float], status: str = "ok") -> None:
        d = tmp_path / "cells" / "k5" / f"{method}-0"
        d.mkdir(parents=True, exist_ok=True)
        episodes = [{"index": i, "accuracy": a} for i, a in enumerate(accs)]
        (d / f"{lang}.json").write_text(json.dumps({"status": status, "k_shot": 5, "method": method, "lang": lang,
                                                    "episodes": episodes}))  # fmt: skip

    cell("ref", "aaa_Latn", [0.5, 0.6])
    cell("ref", "bbb_Latn", [0.4, 0.4])
    cell("new", "aaa_Latn", [0.6, 0.7])
    cell("new", "bbb_Latn", [], status="failed")  # its bbb cell failed: the difference is over aaa alone, and says so
    assert paired.main([str(tmp_path), "--against", "ref", "--methods", "new"]) == 0
    assert "| `new` | +10.0 [+10.0, +10.0] (on 1 of 2 languages) |" in capsys.readouterr().out
