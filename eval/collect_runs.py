"""Copy meta-training runs into eval/results/meta_runs/ and tabulate every attempt.

Each run keeps its resolved config, its metrics, and its final (or best) meta-learned tensors
(LoRA + head only, well under a megabyte), so the benchmark can load it as ``meta:<dir>`` from
a clean clone. ``attempts.md`` lists each run with its meta-validation accuracy: runs are chosen
by the validation languages, never by the evaluation languages.

    python eval/collect_runs.py runs/protonet runs/head_only ...
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent / "results" / "meta_runs"


def summarise(run: Path) -> dict:
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    vals = [(r["step"], r["val_acc"]) for r in rows if "val_acc" in r]
    best_step, best = max(vals, key=lambda sv: sv[1]) if vals else (rows[-1]["step"], float("nan"))
    enc, meta = cfg["encoder"], cfg["meta"]
    layers = f"top {enc['lora_top_layers']}" if enc.get("lora_top_layers") else "all"
    return {
        "name": run.name,
        "algorithm": meta["algorithm"],
        "adapters": f"LoRA r={enc['lora_r']} {'/'.join(enc['target_modules'])} {layers}"
        if enc["lora_r"]
        else "none (frozen)",
        "head": f"{meta['distance']}, proj {meta.get('projection_dim') or '-'}",
        "inner": f"{meta.get('inner_steps')} x {meta.get('inner_lr')} on {meta.get('inner_params')}"
        if meta["algorithm"] != "protonet"
        else "-",
        "train_data": f"{len(cfg['data']['train_langs'])} langs"
        + (", cross-lingual" if cfg["data"].get("cross_lingual") else ""),
        "precision": "bf16" if cfg.get("mixed_precision") == "bf16" else "fp32",
        "val_episodes": len(cfg["data"]["val_langs"]) * cfg["data"].get("val_episodes", 8),
        "steps": rows[-1]["step"],
        "episodes": rows[-1]["step"] * cfg["meta_batch_size"],
        "best_val": best,
        "best_step": best_step,
        "val_curve": vals,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        dest = OUT / run.name
        shutil.rmtree(dest, ignore_errors=True)
        src = run / "final" if (run / "final").is_dir() else run / "best"
        shutil.copytree(src, dest)
        for name in ("config.yaml", "metrics.jsonl"):
            shutil.copy2(run / name, dest / name)
    summaries = [summarise(d) for d in sorted(OUT.iterdir()) if (d / "metrics.jsonl").is_file()]
    lines = [
        "# Meta-training attempts (chosen by meta-validation accuracy: nya, run, sot, tsn, kon dev splits)",
        "",
        "",
        "Validation: 7-way 5-shot episodes of the 5 languages' dev splits (support and queries disjoint), fixed",
        "for the whole run; the run's artifact is its best validation step. Runs and model soups are then",
        "compared on the same validation languages with the benchmark's protocol (support from dev, queries",
        "from test, 20 episodes each): `eval/results/sib200_val/results.md` (`eval/configs/sib200_val.yaml`).",
        "",
        "| run | algorithm | adapters | head | inner loop | training episodes from | precision | steps (episodes) "
        "| val episodes | best val acc (step) | val curve |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        curve = " ".join(f"{v:.3f}" for _, v in s["val_curve"])
        lines.append(f"| `{s['name']}` | {s['algorithm']} | {s['adapters']} | {s['head']} | {s['inner']} | "
                     f"{s['train_data']} | {s['precision']} | {s['steps']} ({s['episodes']}) | {s['val_episodes']} | "
                     f"{s['best_val']:.4f} ({s['best_step']}) | {curve} |")  # fmt: skip
    (OUT / "attempts.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (OUT / "attempts.json").write_text(json.dumps(summaries, indent=1) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
