"""Latency of ``xmeta adapt`` / ``xmeta predict`` on the default encoder (multilingual-e5-small).

    python eval/perf/adapt_latency.py                       # --model default, else the ProtoMAML recipe untrained
    python eval/perf/adapt_latency.py --model runs/protonet --threads 4 --repeats 5

Measures, in one process:

- ``load``: loading the meta-trained model (backbone from the zoo cache + meta tensors);
- ``adapt``: ``xmeta.adapt`` from 7x5 SIB-200 dev sentences of ``--lang`` (support validation,
  tokenisation, the algorithm's inner loop), median of ``--repeats`` after one warm-up;
- ``predict``: ``predictor.predict`` of 1,000 SIB-200 test sentences (several languages) with
  batch size ``--batch-size``, after a warm-up batch;
- ``save`` / ``reload``: writing the artifact and loading it back (backbone included), and its size.

When ``--model default`` is not installed, a ``MetaModel`` is built from
``recipes/configs/protomaml_head.yaml`` (untrained: same tensor shapes, hence the same cost) and the
result says so. Writes ``eval/results/perf/adapt_latency.json``. Timings on a shared machine are
provisional: the load average at start and end is recorded next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, data_dir, rss_peak_mb  # eval/perf/common.py

OUT = ROOT / "eval" / "results" / "perf" / "adapt_latency.json"
PREDICT_LANGS = ("swh_Latn", "yor_Latn", "hau_Latn", "amh_Ethi", "zul_Latn", "tir_Ethi")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="'default' or a meta-training run directory")
    p.add_argument("--lang", default="swh_Latn", help="support language (SIB-200 dev split)")
    p.add_argument("--k-shot", type=int, default=5, help="support examples per class (default 5)")
    p.add_argument("--n-predict", type=int, default=1000, help="sentences to predict (default 1000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed adaptations (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args()


def load_source(model: str) -> tuple[Any, str]:
    """The meta-trained model, or the ProtoMAML recipe's model untrained when no default is installed."""
    import xmeta.adaptation
    from xmeta.config import load_config
    from xmeta.errors import InputError
    from xmeta.meta import MetaModel
    from xmeta.models.encoder import Encoder
    from xmeta.training.config import TrainConfig

    try:
        return xmeta.adaptation.load_meta(model), model
    except InputError as err:
        if model != "default":
            raise
        print(f"note: {err}\n  -> timing the ProtoMAML recipe's model untrained (same shapes and cost)")
    cfg = load_config(TrainConfig, ROOT / "recipes" / "configs" / "protomaml.yaml")
    meta = MetaModel(Encoder.from_config(cfg.encoder), cfg.meta)
    return xmeta.adaptation.MetaSource(
        meta, {"model": "recipes/configs/protomaml_head.yaml (untrained)"}
    ), "untrained ProtoMAML recipe"


def predict_texts(n: int) -> list[str]:
    from xmeta.data.readers import read_rows

    texts: list[str] = []
    for lang in PREDICT_LANGS:
        texts += [r.values[0] for r in read_rows(data_dir() / "sib200" / "annotated" / lang / "test.tsv", ["text"])]
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} test sentences in {', '.join(PREDICT_LANGS)}; lower --n-predict")
    return texts[:n]


def main() -> int:
    args = parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import xmeta
    from xmeta.adaptation import load_support

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    source, model_used = load_source(args.model)
    load_s = time.perf_counter() - t0

    dev = data_dir() / "sib200" / "annotated" / args.lang / "dev.tsv"
    support = load_support(dev, label_column="category", lang=args.lang, max_per_class=args.k_shot)
    pairs = [(e.text, e.label_name) for e in support.examples]
    xmeta.adapt(pairs, source, lang=args.lang)  # warm-up (allocator, kernels, tokenizer caches)
    adapt_s = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        predictor = xmeta.adapt(pairs, source, lang=args.lang, batch_size=args.batch_size)
        adapt_s.append(time.perf_counter() - t0)

    texts = predict_texts(args.n_predict)
    predictor.predict(texts[: args.batch_size])  # warm-up batch
    t0 = time.perf_counter()
    predictor.predict(texts)
    predict_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = predictor.save(Path(tmp) / "adapted")
        save_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in out.iterdir())
        t0 = time.perf_counter()
        xmeta.load_predictor(out)
        reload_s = time.perf_counter() - t0

    cfg = source.model.cfg
    result = {
        "what": "xmeta adapt from 7x5 examples / predict 1,000 sentences on the default encoder",
        "provisional": True,
        "model": model_used,
        "encoder": source.model.encoder.cfg.model,
        "algorithm": cfg.algorithm,
        "inner_steps": cfg.effective_eval_inner_steps if cfg.spec.inner_loop else 0,
        "inner_params": cfg.inner_params,
        "support": {"lang": args.lang, "examples": len(pairs), "per_class": support.stats["per_class"]},
        "load_s": round(load_s, 3),
        "adapt_s_median": round(statistics.median(adapt_s), 3),
        "adapt_s_all": [round(x, 3) for x in adapt_s],
        "predict": {
            "sentences": len(texts),
            "batch_size": args.batch_size,
            "seconds": round(predict_s, 3),
            "sentences_per_s": round(len(texts) / predict_s, 1),
            "langs": list(PREDICT_LANGS),
        },
        "save_s": round(save_s, 3),
        "reload_s": round(reload_s, 3),
        "artifact_bytes": size,
        "peak_rss_mb": round(rss_peak_mb(), 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
        "loadavg_start_end": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
