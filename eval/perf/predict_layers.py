"""Ablation of the prediction layers (``xmeta.models.inference``): speed and agreement with fp32.

    python eval/perf/predict_layers.py      # writes eval/results/perf/predict_layers.json

The shipped ``meta:default`` adapted to a 7-way 5-shot Swahili support set (as ``predict_speed.py``)
predicts 2,000 SIB-200 test sentences of the ``eval:lowres25`` languages (``AdaptedPredictor.predict``,
batches of 64, best of 2 passes) in: fp32 general path (the reference), fp32 and bf16 through the
prediction layers, bf16 with a bf16 residual stream, and bf16 autocast through the general path.
Reported per variant: sentences/s, the largest probability difference from the reference and the
share of equal labels. Run on an idle machine.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import ROOT  # noqa: E402
from predict_speed import adapted_predictor, sib200_test_sentences  # noqa: E402

import xmeta.models.inference as inference  # noqa: E402

SPEC = {"support_lang": "swh_Latn", "n_way": 7, "k_shot": 5, "seed": 0, "batch_size": 64}
VARIANTS = (  # name, precision, prediction layers, residual stream dtype
    ("fp32/general", "fp32", False, None),
    ("fp32/layers", "fp32", True, None),
    ("bf16/general (autocast)", "bf16", False, None),
    ("bf16/layers", "bf16", True, None),
    ("bf16/layers, bf16 residual", "bf16", True, torch.bfloat16),
)


def main() -> None:
    texts = sib200_test_sentences("eval:lowres25", 2000)
    build = inference.InferenceLayers.build
    rows, ref = [], None
    for name, precision, layers, residual in VARIANTS:
        inference.InferenceLayers.build = build if layers else classmethod(lambda cls, *a, **k: None)
        predictor = adapted_predictor(SPEC, precision)
        if residual is not None:
            predictor._episode.inference_layers.residual_dtype = residual
        predictor.predict(texts[:64])  # warm-up
        best, probs = float("inf"), None
        for _ in range(2):
            t0 = time.perf_counter()
            probs = predictor.predict(texts).probs
            best = min(best, time.perf_counter() - t0)
        ref = probs if ref is None else ref
        rows.append({"variant": name, "sentences_per_s": round(len(texts) / best, 1),
                     "max_abs_prob_diff_vs_fp32": float(np.abs(probs - ref).max()),
                     "labels_equal_to_fp32": float((probs.argmax(1) == ref.argmax(1)).mean())})  # fmt: skip
        print(rows[-1], flush=True)
    inference.InferenceLayers.build = build
    out = ROOT / "eval" / "results" / "perf" / "predict_layers.json"
    out.write_text(json.dumps({"sentences": len(texts), "rows": rows, "threads": torch.get_num_threads(),
                               "loadavg_before": os.getloadavg(), "platform": platform.platform(),
                               "written": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
