"""Adaptation latency of a meta-learned encoder and per-query latency next to the ICL baseline.

Run by ``eval/perf/run.py`` through ``measure.py`` (kinds ``latency`` and ``icl``): a 7x5 support
set from an evaluation language's dev split, queries from its test split. Each query text is new
to the predictor it is timed with (no memoised features), in one call per query ("single") and
all in one call ("batched", per query).
"""

from __future__ import annotations

import statistics
import time

from common import build_model, build_setting, eval_episode, rss_peak_mb  # eval/perf/common.py


def measure_latency(spec: dict) -> dict:
    import dataclasses

    from xmeta.meta import MetaLearner

    enc_cfg, meta_cfg, _, precision = build_setting({**spec, "algorithm": "default"})
    if spec.get("inner_params"):
        meta_cfg = dataclasses.replace(meta_cfg, inner_params=spec["inner_params"], inner_steps=spec["inner_steps"])
    support, queries = eval_episode(spec["lang"], spec["n_way"], spec["k_shot"], spec["queries"], spec["seed"])
    model = build_model(enc_cfg, meta_cfg, spec.get("lora_std", 0.01), spec["seed"])
    texts = [q.text for q in queries]
    # The precision goes through the learner's own option (what `xmeta predict --precision` uses).
    MetaLearner(model, precision=precision).adapt(support).predict(texts[:2])  # warm-up
    adapt_s = []
    for r in range(spec["repeats"]):
        learner = MetaLearner(model, precision=precision)  # fresh: nothing memoised from the previous repeat
        t0 = time.perf_counter()
        predictor = learner.adapt(support, seed=r)
        adapt_s.append(time.perf_counter() - t0)
    single = []
    for t in texts:  # one query at a time (each text new to the predictor)
        t0 = time.perf_counter()
        predictor.predict([t])
        single.append(time.perf_counter() - t0)
    predictor = MetaLearner(model, precision=precision).adapt(support)
    t0 = time.perf_counter()
    predictor.predict(texts)
    batched = (time.perf_counter() - t0) / len(texts)
    return {
        "adapt_seconds": statistics.median(adapt_s),
        "query_seconds_single": statistics.median(single),
        "query_seconds_batched": batched,
        "support": len(support),
        "queries": len(texts),
        "precision": precision,
        "meta": {
            "algorithm": meta_cfg.algorithm,
            "inner_params": meta_cfg.inner_params,
            "inner_steps": meta_cfg.effective_eval_inner_steps,
        },  # fmt: skip
        "peak_rss_mb": round(rss_peak_mb(), 1),
    }


def measure_icl(spec: dict) -> dict:
    from xmeta.icl import ICLLearner

    support, queries = eval_episode(spec["lang"], spec["n_way"], spec["k_shot"], spec["queries"], spec["seed"])
    texts = [q.text for q in queries]
    dtype = spec.get("dtype", "float32")
    learner = ICLLearner(spec["model"], use_cache=True, template="topic", dtype=dtype, batch_size=16)
    learner.load()
    predictor = learner.adapt(support)
    t0 = time.perf_counter()
    predictor.predict(texts[:1])  # encodes the shared prefix (the ICL "adaptation") + one query
    first = time.perf_counter() - t0
    single = []
    for t in texts[1:]:
        t0 = time.perf_counter()
        predictor.predict([t])
        single.append(time.perf_counter() - t0)
    rest = texts[1:]
    t0 = time.perf_counter()
    predictor.predict(rest)
    batched = (time.perf_counter() - t0) / max(1, len(rest))
    return {
        "prefix_plus_first_query_seconds": first,
        "prefix_tokens": predictor.prefix_tokens,
        "query_seconds_single": statistics.median(single) if single else None,
        "query_seconds_batched": batched,
        "queries": len(texts),
        "dtype": dtype,
        "peak_rss_mb": round(rss_peak_mb(), 1),
    }
