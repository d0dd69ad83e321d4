"""Copy meta-training runs into eval/results/meta_runs/ and tabulate every attempt.

Each run's final (or best) artifact is copied (LoRA + head only, well under a megabyte), so the
benchmark can load it as ``meta:<dir>`` from a clean clone; its config and validation curve are
summarised into ``attempts.json``, where the runs collected earlier keep their rows.
``attempts.md`` lists each run with its meta-validation accuracy (runs are chosen by the
validation languages, never by the evaluation languages); the notes below its table are kept.
``val_curves.png`` plots every run's validation curve against the episodes it had trained on.

    python eval/collect_runs.py runs/protonet runs/head_only ...
    python eval/collect_runs.py            # no run: the table again, with the latest scores beside it

Beside each run's validation the table shows its score on the wide validation set
(``eval/results/selection/``) and on the standard benchmark (``eval/results/sib200_lowres/``) where
those hold it, and its wall time: recorded by the run, else re-timed by
``eval/perf/recipe_wall_time.py`` (an estimate, marked so).

``--checkpoint STEP`` also publishes one run's checkpoint of that step as the artifact
``<run>_step<STEP>`` (no table row: the run's row is its chosen artifact), e.g. the last step of a run
whose best validation came earlier, to score both on the wide validation set (``eval/select_runs.py``):

    python eval/collect_runs.py runs/mamlpp_hr50 --checkpoint 250
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
        + (", cross-lingual" if cfg["data"].get("cross_lingual") else "")
        + (f", {cfg['data']['n_way_min']}-{cfg['data']['n_way']} ways" if cfg["data"].get("n_way_min") else "")
        + (
            f", + {cfg['data']['aux_task']} episodes ({cfg['data']['aux_fraction']:.0%})"
            if cfg["data"].get("aux_task")
            else ""
        ),  # fmt: skip
        "precision": "bf16" if cfg.get("mixed_precision") == "bf16" else "fp32",
        "val_episodes": len(cfg["data"]["val_langs"]) * cfg["data"].get("val_episodes", 8),
        "steps": rows[-1]["step"],
        "episodes": rows[-1]["step"] * cfg["meta_batch_size"],
        "best_val": best,
        "best_step": best_step,
        "val_curve": vals,
        "wall_minutes": _wall_minutes(run),
    }


def _wall_minutes(run: Path) -> float | None:
    """The run's wall time (``train_seconds`` in its final state, summed over resumes), if recorded."""
    summary = run / "final" / "training.json"
    seconds = json.loads(summary.read_text(encoding="utf-8")).get("train_seconds") if summary.is_file() else None
    return None if seconds is None else round(seconds / 60, 1)


def scores(names: list[str], results: Path) -> dict[str, dict]:
    """What the other committed results say about each run (None where they do not cover it): its
    wide-validation accuracy (``selection/``), its standard-benchmark accuracy per K
    (``sib200_lowres/``) and, for runs that kept no wall time, the estimate of
    ``eval/perf/recipe_wall_time.py`` (``perf/recipe_wall_times.json``)."""

    def load(rel: str) -> dict | None:
        path = results / rel
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    selection, bench, wall = (load("selection/results.json"), load("sib200_lowres/results.json"),
                              load("perf/recipe_wall_times.json"))  # fmt: skip
    found = {}
    for name in names:
        path = f"eval/results/meta_runs/{name}"
        row: dict = {"wide_val": None, "benchmark": None, "retimed_minutes": None}
        if selection:
            row["wide_val"] = next((r["accuracy"] for r in selection["runs"] if r["run"] == path), None)
        if bench:
            # Only a complete benchmark row (every language's cell finished) is a mean over the 25 languages.
            entries = {int(k): r["methods"].get(f"meta:{path}", {}) for k, r in bench["by_k"].items()}
            complete = entries and all(
                e.get("complete") and e.get("mean_accuracy") is not None for e in entries.values()
            )
            row["benchmark"] = {k: e["mean_accuracy"] for k, e in sorted(entries.items())} if complete else None
        if wall:
            row["retimed_minutes"] = next((r["estimate_min"] for r in wall["rows"] if r["run"] == name), None)
        found[name] = row
    return found


def publish_checkpoint(run: Path, step: int) -> Path:
    """Write ``run``'s checkpoint of ``step`` as the artifact ``OUT/<run>_step<step>`` (with the run's
    training data, for the benchmark's leakage check, and the validation accuracy of that step)."""
    from xmeta.artifacts import open_artifact
    from xmeta.artifacts.training_data import training_data_of
    from xmeta.meta.checkpoint import load_meta_model, save_meta_model

    ckpt = run / "checkpoints" / f"step-{step:08d}"
    if not ckpt.is_dir():
        kept = sorted(p.name for p in (run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else []
        raise SystemExit(f"{ckpt}: no checkpoint of step {step} (kept: {', '.join(kept) or 'none'})")
    chosen = run / "final" if (run / "final").is_dir() else run / "best"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    val = next((r["val_acc"] for r in rows if r["step"] == step and "val_acc" in r), None)
    card = (f"The state of the meta-training run `{run.name}` at step {step} (its checkpoint), published beside "
            f"the run's chosen artifact `{run.name}` (its best validation step) to compare the two.\n")  # fmt: skip
    return save_meta_model(load_meta_model(ckpt), OUT / f"{run.name}_step{step}",
                           training=training_data_of(open_artifact(chosen)), step=step, val_acc=val, card=card)  # fmt: skip


def plot_curves(summaries: list[dict], path: Path) -> Path:
    """Each run's validation accuracy against training episodes (one panel per validation set size:
    runs validated on different episodes are not on one scale)."""
    from xmeta.bench.plots import pyplot, save_figure

    plt = pyplot()
    sizes = sorted({s["val_episodes"] for s in summaries})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6.0 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for s in (s for s in summaries if s["val_episodes"] == size and s["val_curve"]):
            steps, accs = zip(*s["val_curve"])
            per_step = s["episodes"] / s["steps"]
            (line,) = ax.plot([per_step * t for t in steps], [100 * a for a in accs], marker="o", ms=3,
                              label=f"{s['name']} ({s['algorithm']})")  # fmt: skip
            ax.plot(per_step * s["best_step"], 100 * s["best_val"], marker="*", ms=12, color=line.get_color())
        ax.set_xlabel("training episodes")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(f"{size} validation episodes (\u2605 = the published step)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(plt, fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    p.add_argument("runs", nargs="*", type=Path, help="run directories (none: only rewrite the table and plot)")
    p.add_argument("--checkpoint", type=int, metavar="STEP",
                   help="also publish the (single) run's checkpoint of this step as <run>_step<STEP>")  # fmt: skip
    args = p.parse_args()
    if args.checkpoint is not None and len(args.runs) != 1:
        p.error("--checkpoint takes exactly one run")
    OUT.mkdir(parents=True, exist_ok=True)
    # Runs collected earlier keep their rows (their artifacts hold no metrics): attempts.json is the record.
    known = (
        {s["name"]: s for s in json.loads((OUT / "attempts.json").read_text(encoding="utf-8"))}
        if (OUT / "attempts.json").is_file()
        else {}
    )
    for run in args.runs:
        dest = OUT / run.name
        src = run / "final" if (run / "final").is_dir() else run / "best"
        same = (dest / "xmeta.json").is_file() and (dest / "xmeta.json").read_bytes() == (
            src / "xmeta.json"
        ).read_bytes()
        if not same:  # (a copy with the same manifest -- every file's digest -- is left in place)
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest)  # the artifact alone: its manifest lists every file it holds
        known[run.name] = summarise(run)
    if args.checkpoint is not None:
        print(f"published {publish_checkpoint(args.runs[0], args.checkpoint)}")
    summaries = [known[name] for name in sorted(known)]
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
        "| val episodes | best val acc (step) | wide val (%) | standard benchmark K = 1 / 5 / 10 (%) "
        "| wall time (min) | val curve |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    others = scores([s["name"] for s in summaries], OUT.parent)
    for s in summaries:
        curve = " ".join(f"{v:.3f}" for _, v in s["val_curve"])
        found = others[s["name"]]
        wall = (f"{s['wall_minutes']:.0f}" if s.get("wall_minutes") is not None
                else f"~{found['retimed_minutes']:.0f} (re-timed)" if found["retimed_minutes"] is not None
                else "not recorded")  # fmt: skip
        wide = "-" if found["wide_val"] is None else f"{100 * found['wide_val']:.1f}"
        bench = "-" if found["benchmark"] is None else " / ".join(f"{100 * a:.1f}" for a in found["benchmark"].values())
        lines.append(f"| `{s['name']}` | {s['algorithm']} | {s['adapters']} | {s['head']} | {s['inner']} | "
                     f"{s['train_data']} | {s['precision']} | {s['steps']} ({s['episodes']}) | {s['val_episodes']} | "
                     f"{s['best_val']:.4f} ({s['best_step']}) | {wide} | {bench} | {wall} | {curve} |")  # fmt: skip
    # What follows the table (notes written by hand) is kept.
    old = (OUT / "attempts.md").read_text(encoding="utf-8") if (OUT / "attempts.md").is_file() else ""
    rest = old[old.index("\n## ") :] if "\n## " in old else ""
    (OUT / "attempts.md").write_text("\n".join(lines) + "\n" + rest, encoding="utf-8")
    (OUT / "attempts.json").write_text(json.dumps(summaries, indent=1) + "\n", encoding="utf-8")
    plot_curves(summaries, OUT / "val_curves.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
