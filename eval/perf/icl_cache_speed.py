"""Seconds per ICL episode with and without the prefix KV cache, on real SIB-200 episodes.

    python eval/perf/icl_cache_speed.py --lang swh_Latn --episodes 1
    python eval/perf/icl_cache_speed.py --episodes 2 --dtype bfloat16 --device cuda

Each episode is 7-way 5-shot with 5 queries per class, episode ``i`` of ``--lang`` exactly as
``xmeta bench`` draws it (``xmeta.data.EpisodeSampler.for_evaluation``: support from dev, queries
from test of SIB-200 under ``$XMETA_DATA_DIR``, default ../shared/data). Both
paths score the same episode with the same predictor settings; the JSON records the timings,
the largest score difference between the paths (they must agree) and both accuracies.
Model loading is not timed; the cached timing includes encoding the prefix. On a slow machine,
``--naive-queries N`` times the naive path on N queries and scales it linearly to the episode
(recorded as ``naive_extrapolated``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, eval_sampler  # eval/perf/common.py

from xmeta.icl import ICLLearner
from xmeta.interfaces import Example

logger = logging.getLogger("icl_cache_speed")


def timed_predict(learner: ICLLearner, support: list[Example], query: list[Example], seed: int) -> dict:
    start = time.perf_counter()
    predictor = learner.adapt(support, seed=seed)
    scores = predictor.score([q.text for q in query]).logprob_sum
    seconds = time.perf_counter() - start
    gold = np.array([q.label for q in query])
    return {
        "seconds": seconds,
        "scores": scores,
        "accuracy": float((scores.argmax(1) == gold).mean()),
        "prefix_tokens": predictor.prefix_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--lang", default="swh_Latn")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--n-way", type=int, default=7)
    parser.add_argument("--k-shot", type=int, default=5)
    parser.add_argument("--q-query", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip-naive", action="store_true", help="time only the cached path")
    parser.add_argument(
        "--naive-queries",
        type=int,
        default=None,
        help="time the naive path on this many queries (spread over the classes) and scale to the episode",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $XMETA_DATA_DIR, else ../shared/data")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "perf" / "icl_cache.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    common = dict(template="topic", dtype=args.dtype, device=args.device, batch_size=args.batch_size)
    cached = ICLLearner(args.model, use_cache=True, **common)
    model, tokenizer = cached.load()
    naive = ICLLearner(model, tokenizer=tokenizer, use_cache=False, **common)

    sampler = eval_sampler(args.lang, args.n_way, args.k_shot, args.q_query, args.seed, args.data_dir)
    rows = []
    for index in range(args.episodes):
        episode = sampler.episode(index)
        support, query = list(episode.support), list(episode.query)
        fast = timed_predict(cached, support, query, seed=index)
        row = {
            "index": index,
            "prefix_tokens": fast["prefix_tokens"],
            "seconds_cached": round(fast["seconds"], 3),
            "accuracy_cached": fast["accuracy"],
        }
        if not args.skip_naive:
            # Naive cost is linear in the number of queries (each runs the full prompt once per
            # label), so a subset times it faithfully when the machine cannot afford all of them.
            n = min(args.naive_queries or len(query), len(query))
            subset = query[:: max(1, len(query) // n)][:n]
            slow = timed_predict(naive, support, subset, seed=index)
            picked = [query.index(q) for q in subset]
            seconds = slow["seconds"] * len(query) / n
            row |= {
                "seconds_naive": round(seconds, 3),
                "naive_queries_timed": n,
                "naive_extrapolated": n < len(query),
                "max_abs_score_diff": float(np.abs(fast["scores"][picked] - slow["scores"]).max()),
                "speedup": round(seconds / fast["seconds"], 2),
            }
            if n == len(query):
                row["accuracy_naive"] = slow["accuracy"]
        logger.info("episode %d: %s", index, row)
        rows.append(row)

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if key in r]
        return round(float(np.mean(vals)), 3) if vals else None

    result = {
        "benchmark": "icl_cache_speed",
        "model": args.model,
        "dtype": args.dtype,
        "device": str(next(model.parameters()).device),
        "lang": args.lang,
        "n_way": args.n_way,
        "k_shot": args.k_shot,
        "q_query": args.q_query,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "seconds_per_episode_cached": mean("seconds_cached"),
        "seconds_per_episode_naive": mean("seconds_naive"),
        "speedup": mean("speedup"),
        "accuracy_cached": mean("accuracy_cached"),
        "episodes": rows,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            # Shared machines inflate timings; the load average says how much to trust them.
            "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
            "torch": torch.__version__,
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s", args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "episodes"}, indent=2))


if __name__ == "__main__":
    main()
