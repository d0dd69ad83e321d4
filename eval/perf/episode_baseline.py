"""Seconds per meta-training episode and peak RSS for each algorithm on the real encoder.

    python eval/perf/episode_baseline.py --episodes 1
    python eval/perf/episode_baseline.py --algorithms maml protomaml --episodes 2 --threads 1 \
        --out eval/perf/results/episode_baseline_cpu.json

The baseline setting of the performance issue: multilingual-e5-small, 7-way 5-shot 5-query
episodes from ``<lang>/train.tsv`` of ``$XMETA_DATA_DIR/sib200/annotated`` (default
../shared/data), max_length 64, LoRA r=8 on query/value of all 12 layers, 5 inner steps.
One episode = ``meta_step_loss`` + ``backward`` + an Adam step (what a recipe does per task).
Each algorithm runs in its own process so that its peak RSS (``ru_maxrss``) is its own; model
loading is not timed. The first episode includes one-off warm-up costs (recorded separately).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from xmeta.interfaces import Episode, Example
from xmeta.meta import ALGORITHMS, MetaConfig, MetaModel, meta_step_loss, tokenize_episode
from xmeta.models.encoder import Encoder, EncoderConfig

ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    path = Path(os.environ.get("XMETA_DATA_DIR", ROOT.parent / "shared" / "data"))
    return path if path.is_absolute() else (ROOT / path).resolve()


def sib_episode(lang: str, index: int, seed: int, n_way: int = 7, k_shot: int = 5, q_query: int = 5) -> Episode:
    """A seeded episode from one language's train split (support and query disjoint)."""
    by_cat: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with (data_dir() / "sib200" / "annotated" / lang / "train.tsv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            by_cat[row["category"]].append((row["index_id"], row["text"]))
    rng = random.Random(f"{seed}/{index}")
    cats = sorted(rng.sample(sorted(by_cat), n_way))
    support, query = [], []
    for label, cat in enumerate(cats):
        rows = rng.sample(by_cat[cat], k_shot + q_query)
        ex = [Example(f"sib200/{lang}/train/{i}", t, label, cat, lang, i) for i, t in rows]
        support += ex[:k_shot]
        query += ex[k_shot:]
    return Episode(index, lang, lang, tuple(cats), tuple(support), tuple(query), seed)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(args: argparse.Namespace, algorithm: str) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    enc_cfg = EncoderConfig(model=args.model, max_length=args.max_length, lora_r=args.lora_r)
    encoder = Encoder.from_config(enc_cfg)
    model = MetaModel(encoder, MetaConfig(algorithm=algorithm, inner_steps=args.inner_steps))
    rss_loaded = rss_mb()
    opt = torch.optim.Adam(model.meta_params().values(), lr=1e-4)
    episodes = [tokenize_episode(encoder, sib_episode(args.lang, i, args.seed)) for i in range(args.episodes)]
    times, accs = [], []
    for ep in episodes:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, metrics = meta_step_loss(model, model.meta_params(), ep)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        accs.append(float(metrics["acc"]))
    return {
        "algorithm": algorithm,
        "first_order": model.cfg.effective_first_order,
        "attn_implementation": encoder.attn_implementation,
        "seconds_per_episode": times,
        "seconds_per_episode_after_first": (sum(times[1:]) / len(times[1:])) if len(times) > 1 else None,
        "peak_rss_mb": round(rss_mb(), 1),
        "rss_after_load_mb": round(rss_loaded, 1),
        "query_acc": accs,
        "padded_tokens": [int(ep.support["input_ids"].numel() + ep.query["input_ids"].numel()) for ep in episodes],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=ALGORITHMS.names())
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--lang", default="eng_Latn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--note", default="", help="free text stored in the JSON (e.g. machine load)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # one algorithm per process: its own peak RSS
        print(json.dumps(run_one(args, args.child)))
        return
    rows = []
    for algorithm in args.algorithms:
        ALGORITHMS.get(algorithm)
        cmd = [sys.executable, __file__, "--child", algorithm, *_passthrough(args)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "setting": {k: v for k, v in vars(args).items() if k not in ("out", "child", "note")},
        "note": args.note,
        "episode": "7-way 5-shot 5-query",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads or torch.get_num_threads(),
            "load_average": os.getloadavg(),
        },
        "results": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _passthrough(args: argparse.Namespace) -> list[str]:
    return [
        f"--episodes={args.episodes}",
        f"--inner-steps={args.inner_steps}",
        f"--max-length={args.max_length}",
        f"--lora-r={args.lora_r}",
        f"--model={args.model}",
        f"--lang={args.lang}",
        f"--seed={args.seed}",
        f"--threads={args.threads}",
    ]


if __name__ == "__main__":
    main()
