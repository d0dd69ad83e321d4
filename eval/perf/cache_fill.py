"""Activation-cache fill speed: one example at a time against fixed-shape tiles (xmeta/meta/cache.py).

``cache_fill_speedup`` = seconds to fill the cache with the examples of the first ``episodes``
meta-training episodes one example at a time / the same with the tiled fill (the default), each
filled in one call, as ``prebuild_activation_cache`` does. ``per_episode_speedup`` is the same ratio
when the cache fills episode after episode, as a run without a pre-built cache does (each episode
brings a few new examples per tile width, so partial tiles waste more). Also reported: how far the
stored values are apart (bf16 storage: each example's largest difference in bf16 ulps of its largest value).

    python eval/perf/cache_fill.py                       # 30 episodes, e5-small, top-4 cut, length 64
    python eval/perf/cache_fill.py --episodes 5 --threads 2 --precision bf16

Prints one JSON object. Timings on a shared machine are indicative (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch
from common import autocast, load_episodes  # eval/perf/common.py

TRAIN_LANGS = [
    "eng_Latn",
    "fra_Latn",
    "deu_Latn",
    "spa_Latn",
    "por_Latn",
    "rus_Cyrl",
    "zho_Hans",
    "jpn_Jpan",
    "arb_Arab",
    "hin_Deva",
]  # fmt: skip  (train:hr10, the recipe's default meta-training languages)


STORAGE = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _fill(encoder, groups, precision: str, storage: str = "bf16", **kwargs) -> tuple[float, Any]:
    from xmeta.meta import ActivationCache

    cache = ActivationCache(encoder, dtype=STORAGE[storage], **kwargs)
    with autocast(precision):
        start = time.perf_counter()
        for examples in groups:
            cache.fill(examples)
        return time.perf_counter() - start, cache


def _ulps(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| of an example in units of the bf16 spacing at its largest |value|."""
    a, b = a.float(), b.float()
    ulp = torch.finfo(torch.bfloat16).eps * torch.exp2(torch.floor(torch.log2(a.abs().max())))
    return float((a - b).abs().max() / ulp)


def measure_cache_fill(
    episodes: int = 30,
    model: str = "multilingual-e5-small",
    top_layers: int = 4,
    max_length: int = 64,
    precision: str = "fp32",
    storage: str = "bf16",
    per_episode: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Fill times and the speed-up of the tiled fill; see the module docstring.

    Args:
        episodes: the first this many meta-training episodes (7-way 5-shot 5-query, ``TRAIN_LANGS``)
            give the examples.
        model: the encoder; ``top_layers``: LoRA in its top this many layers (the cut the cache stops at).
        max_length: tokens per example at most.
        precision: the fills' autocast ("fp32" or "bf16"); ``storage``: the cache's dtype ("bf16", "fp32").
        per_episode: also time filling episode after episode (``per_episode_speedup``).
        seed: the episodes' seed.
    """
    from xmeta.models.encoder import Encoder, EncoderConfig

    encoder = Encoder.from_config(EncoderConfig(model=model, max_length=max_length, lora_top_layers=top_layers))
    shape = {"n_way": 7, "k_shot": 5, "q_query": 5, "langs": TRAIN_LANGS}
    eps = load_episodes(shape, episodes, seed)
    groups = [[*ep.support, *ep.query] for ep in eps]
    unique = list({e.uid: e for g in groups for e in g}.values())
    _fill(encoder, [unique[:8]], precision, storage)  # warm-up: first-call costs (allocations, kernel choice)
    one_s, one = _fill(encoder, [unique], precision, storage, batched_fill=False)
    tiled_s, tiled = _fill(encoder, [unique], precision, storage)
    rows = [
        (one.batch([e], fill=False)["hidden_states"], tiled.batch([e], fill=False)["hidden_states"]) for e in unique
    ]
    lengths = [len(x) for x in encoder.token_ids([e.text for e in unique])]
    out: dict[str, Any] = {
        "cache_fill_speedup": round(one_s / tiled_s, 2),
        "one_at_a_time_s": round(one_s, 2),
        "tiled_s": round(tiled_s, 2),
        "ms_per_example": {
            "one_at_a_time": round(1000 * one_s / len(unique), 2),
            "tiled": round(1000 * tiled_s / len(unique), 2),
        },  # fmt: skip
        "max_diff_bf16_ulps": round(max(_ulps(a, b) for a, b in rows), 3),
        "max_abs_diff": float(max((a.float() - b.float()).abs().max() for a, b in rows)),
        "episodes": episodes,
        "examples": len(unique),
        "real_tokens": sum(lengths),
        "tile_cells": tiled.fill_batch_tokens,
        "model": model,
        "first_trainable_layer": tiled.layer,
        "max_length": max_length,
        "storage": str(STORAGE[storage]).removeprefix("torch."),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "loadavg_1min": os.getloadavg()[0],
    }
    if per_episode:
        one_ep_s, _ = _fill(encoder, groups, precision, storage, batched_fill=False)
        tiled_ep_s, _ = _fill(encoder, groups, precision, storage)
        out["per_episode_speedup"] = round(one_ep_s / tiled_ep_s, 2)
        out["per_episode_s"] = {"one_at_a_time": round(one_ep_s, 2), "tiled": round(tiled_ep_s, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--top-layers", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="the fills' autocast")
    parser.add_argument("--storage", choices=sorted(STORAGE), default="bf16", help="the cache's dtype")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-per-episode", action="store_true", help="skip the episode-by-episode fills")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure_cache_fill(args.episodes, args.model, args.top_layers, args.max_length, args.precision,
                                        args.storage, not args.no_per_episode)))  # fmt: skip


if __name__ == "__main__":
    main()
