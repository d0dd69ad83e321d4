"""bf16 vs fp32 inference of the shipped model on the standard benchmark's episodes, paired.

    xmeta bench --config eval/configs/sib200_lowres_bf16.yaml --data-dir ../shared/data
    python eval/results/bf16_check/compare.py > eval/results/bf16_check/comparison.md

The fp32 cells are the committed standard benchmark's ``meta:eval/results/meta_runs/protonet_hr50_xl``
(the run ``meta:default`` ships); the bf16 cells are this directory's ``meta:default`` with
``precision: bf16``. Same episodes (checked by uid); per K: both means over the 25 languages, the
paired difference with a 95% bootstrap interval (per-episode differences resampled within
languages) and the share of query predictions that changed.

History: the bf16 cells were first computed through bf16 autocast of the general encoder path
(-0.06 / +0.03 / +0.03 points at K = 1 / 5 / 10, 111 / 108 / 113 predictions changed); since issue
18 they come from the prediction layers (``xmeta.models.inference``: bf16 oneDNN GEMMs, float32
residual stream), which ``xmeta predict`` and the benchmark's memo now run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from xmeta.bench.stats import stratified_bootstrap_ci  # noqa: E402

FP32 = (ROOT / "eval" / "results" / "sib200_lowres" / "cells", "meta_eval_results_meta_runs_protonet_hr50_xl")
BF16 = (ROOT / "eval" / "results" / "bf16_check" / "cells", "meta_default")


def cells(root: Path, prefix: str, k: str) -> dict[str, dict]:
    (folder,) = [p for p in (root / k).iterdir() if p.name.rsplit("-", 1)[0] == prefix]
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


def main() -> None:
    lines = [
        "| K | fp32 (%) | bf16 (%) | bf16 - fp32 (points, 95% interval) | predictions changed |",
        "|---|---:|---:|---|---:|",
    ]
    for k in ("k1", "k5", "k10"):
        old, new = cells(*FP32, k), cells(*BF16, k)
        diffs, changed, total, a_old, a_new = {}, 0, 0, [], []
        for lang in old:
            eo, en = old[lang]["episodes"], new[lang]["episodes"]
            assert [e["index"] for e in eo] == [e["index"] for e in en], lang
            diffs[lang] = [n["accuracy"] - o["accuracy"] for o, n in zip(eo, en)]
            a_old.append(np.mean([e["accuracy"] for e in eo]))
            a_new.append(np.mean([e["accuracy"] for e in en]))
            for o, n in zip(eo, en):
                changed += sum(a != b for a, b in zip(o["pred"], n["pred"]))
                total += len(o["pred"])
        lo, hi = stratified_bootstrap_ci(diffs)
        d = np.mean([np.mean(v) for v in diffs.values()])
        lines.append(f"| {k[1:]} | {100 * np.mean(a_old):.2f} | {100 * np.mean(a_new):.2f} | "
                     f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] | {changed}/{total} ({100 * changed / total:.1f}%) |")  # fmt: skip
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
