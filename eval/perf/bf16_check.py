"""Does bf16 autocast on CPU change what meta-training learns or what adaptation predicts?

    python eval/perf/bf16_check.py                                   # ProtoMAML recipe, untrained
    python eval/perf/bf16_check.py --artifact runs/protonet/best --eval-episodes 4

Two checks, fp32 against ``torch.autocast("cpu", bfloat16)`` (what ``mixed_precision: bf16``
does in the recipe), on the cached path that meta-training uses:

1. meta-gradients: for ``--train-episodes`` SIB-200 training episodes of each ``--configs``
   recipe config, the query loss and the meta-gradient in both precisions (cosine, relative
   difference of the norms). An update direction that agrees to ~1e-2 leaves training unchanged
   well within the episode-to-episode noise of the gradient.
2. evaluation: with a meta-trained ``--artifact`` (or the ProtoMAML recipe's untrained model),
   ``--eval-episodes`` per language of the 25 low-resource languages (support dev, 5 queries per
   class from test): accuracy in both precisions, their paired difference with a 95% bootstrap
   interval, and how often the two predict the same label.

Writes ``eval/results/perf/bf16_check.json``. A training-level A/B (two recipe runs with
``mixed_precision=no`` / ``bf16``, compared on their validation accuracy) is the final word;
this is the cheap check that it is worth running.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, autocast, build_model, build_setting, data_dir, load_episodes  # eval/perf/common.py

from xmeta.data.languages import language_set

LOWRES = language_set("eval:lowres25")  # the 25 evaluation languages of the standard benchmark


def gradient_check(config: str, n: int, seed: int) -> dict:
    from xmeta.meta import ActivationCache, meta_step_loss, tokenize_episode

    enc_cfg, meta_cfg, shape, _ = build_setting({"algorithm": "default", "layout": "top4", "seed": seed})
    if config != "default":
        from xmeta.config import load_config
        from xmeta.training.config import TrainConfig

        cfg = load_config(TrainConfig, str(ROOT / "recipes" / "configs" / f"{config}.yaml"), [])
        enc_cfg, meta_cfg = cfg.encoder, cfg.meta
    model = build_model(enc_cfg, meta_cfg, 0.01, seed)
    model.train()  # as in the recipe (dropout on): both precisions see the same masks via the seed
    cache = ActivationCache(model.encoder, dtype=torch.float32)
    rows = []
    for ep in load_episodes(shape, n, seed):
        out = {}
        for prec in ("fp32", "bf16"):
            torch.manual_seed(seed)
            with autocast(prec):
                batch = tokenize_episode(model.encoder, ep, cache_frozen=cache)
                loss, _ = meta_step_loss(model, model.meta_params(), batch)
            grads = torch.autograd.grad(loss, list(model.meta_params().values()), allow_unused=True)
            flat = torch.cat([g.flatten().float() for g in grads if g is not None])
            out[prec] = (float(loss), flat)
        a, b = out["fp32"][1], out["bf16"][1]
        rows.append({"loss_fp32": out["fp32"][0], "loss_bf16": out["bf16"][0],
                     "grad_cosine": float(a @ b / (a.norm() * b.norm())),
                     "grad_norm_rel_diff": float((b.norm() - a.norm()) / a.norm())})  # fmt: skip
    return {
        "config": config,
        "algorithm": meta_cfg.algorithm,
        "episodes": rows,
        "min_grad_cosine": min(r["grad_cosine"] for r in rows),
        "mean_abs_loss_diff": float(np.mean([abs(r["loss_fp32"] - r["loss_bf16"]) for r in rows])),
    }


def eval_check(artifact: str | None, per_lang: int, langs: list[str], seed: int) -> dict:
    from xmeta.data import EpisodeSampler, load_task
    from xmeta.meta import MetaLearner, load_meta_model

    if artifact:
        model = load_meta_model(artifact)
    else:
        enc_cfg, meta_cfg, _, _ = build_setting({"algorithm": "default", "layout": "top4", "seed": seed})
        model = build_model(enc_cfg, meta_cfg, 0.01, seed)
    ds = load_task("sib200", data_dir=data_dir(), langs=langs, splits=["dev", "test"])
    sampler = EpisodeSampler.for_evaluation(ds, n_way=7, k_shot=5, q_query=5, seed=seed)
    correct = {"fp32": [], "bf16": []}
    same = []
    for lang in langs:
        for i in range(per_lang):
            ep = sampler.episode(i, lang=lang)
            gold = np.array([q.label for q in ep.query])
            preds = {}
            for prec in ("fp32", "bf16"):
                with autocast(prec):
                    learner = MetaLearner(model)
                    preds[prec] = learner.adapt(ep.support, seed=i).predict([q.text for q in ep.query]).labels
                correct[prec].append(float((preds[prec] == gold).mean()))
            same.append(float((preds["fp32"] == preds["bf16"]).mean()))
    diff = np.array(correct["bf16"]) - np.array(correct["fp32"])
    rng = np.random.default_rng(seed)
    boots = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    return {
        "artifact": artifact or "ProtoMAML recipe config, untrained (random LoRA B)",
        "langs": langs,
        "episodes": len(diff),
        "acc_fp32": float(np.mean(correct["fp32"])),
        "acc_bf16": float(np.mean(correct["bf16"])),
        "diff_bf16_minus_fp32": float(diff.mean()),
        "diff_95ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
        "same_prediction_rate": float(np.mean(same)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["default", "protonet"])
    p.add_argument("--train-episodes", type=int, default=4)
    p.add_argument("--artifact", default=None)
    p.add_argument("--eval-episodes", type=int, default=2, help="per language")
    p.add_argument("--langs", nargs="+", default=list(LOWRES))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "perf" / "bf16_check.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    t0 = time.time()
    result = {
        "gradients": [gradient_check(c, args.train_episodes, args.seed) for c in args.configs],
        "evaluation": eval_check(args.artifact, args.eval_episodes, args.langs, args.seed)
        if args.eval_episodes
        else None,
        "threads": torch.get_num_threads(),
        "seconds": round(time.time() - t0, 1),
        "load_average": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    summary = {
        "gradients": [
            {k: g[k] for k in ("config", "min_grad_cosine", "mean_abs_loss_diff")} for g in result["gradients"]
        ],
        "evaluation": result["evaluation"],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
