"""Wall time of a committed meta-training run, re-timed on this machine with today's code.

    python eval/perf/recipe_wall_time.py                     # every run of RUNS below
    python eval/perf/recipe_wall_time.py protonet fomaml_hr50 --steps 10

The older runs in ``eval/results/meta_runs/`` were trained before the recipe kept its wall time
(``train_seconds`` in ``training.json``). For each run, this re-runs ``recipes/meta_train.py`` with
the run's own recorded config (``training.json``'s ``config``: precision, data, validation
episodes, algorithm) for ``--steps`` meta-steps with one validation at the end, in a fresh process,
and reads back from the run's ``metrics.jsonl`` and ``training.json``:

- seconds per meta-step: the mean of steps 2..N (step 1 warms up; it is reported on its own);
- seconds per validation: the run's ``train_seconds`` minus its N steps (validation + writing
  ``best/``);
- start-up: the process's wall time minus ``train_seconds`` (imports, model and data loading, the
  final checkpoint and artifact);

and extrapolates to the committed run's length: start-up + S x step + V x validation, with S the
steps the run reached and V its validations (every ``val_every`` steps, and at ``max_steps``).
The first steps fill the in-memory activation cache, which later steps reuse: per-step seconds from
the first N steps are an upper bound. Runs that recorded their wall time are re-timed too, as a
check of the extrapolation against a measured figure. Writes
``eval/results/perf/recipe_wall_times.{json,md}``; run it on an idle machine (the load average at
start and end is recorded beside the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNS_DIR = ROOT / "eval" / "results" / "meta_runs"
OUT = ROOT / "eval" / "results" / "perf" / "recipe_wall_times.json"
# Committed run -> the config file that produced it (recipes/configs/<name>.yaml).
RUNS = {
    "protonet": "protonet",
    "head_only": "head_only",
    "fomaml": "fomaml",
    "protomaml": "protomaml_head",
    "protonet_hr50": "protonet_hr50",
    "protonet_hr50_xl": "protonet_hr50_xl",
    "protonet_hr50_xl_short": "protonet_hr50_xl_short",
    "fomaml_hr50": "fomaml_hr50",  # recorded its wall time: the check
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", help=f"run names under {RUNS_DIR.relative_to(ROOT)} (default: {', '.join(RUNS)})")
    p.add_argument("--steps", type=int, default=8, help="meta-steps to time per run (>= 2; default 8)")
    p.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="where the committed runs are")
    p.add_argument("--out", type=Path, default=OUT, help="JSON report (the Markdown table goes beside it)")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error(f"--steps must be >= 2 (step 1 only warms up), got {args.steps}")
    return args


def validations(steps: int, val_every: int, max_steps: int) -> int:
    """How many validations a run that reached ``steps`` made (every ``val_every`` and at ``max_steps``)."""
    if not val_every:
        return 0
    return steps // val_every + (steps == max_steps and steps % val_every != 0)


def timings(
    metrics: list[dict[str, Any]], batch: int, train_seconds: float, process_seconds: float
) -> dict[str, float]:
    """Per-step, per-validation and start-up seconds of a timed run of N steps (validation at step N).

    Each metrics record holds ``episodes_per_s`` = episodes so far / seconds since the loop began,
    taken before that step's validation, so the time at the end of step k is ``k * batch / rate``.
    """
    ends = [r["step"] * batch / r["episodes_per_s"] for r in metrics]
    if len(ends) < 2 or [r["step"] for r in metrics] != list(range(1, len(ends) + 1)):
        raise ValueError(f"need consecutive per-step records from step 1, got steps {[r['step'] for r in metrics]}")
    steps = [b - a for a, b in zip(ends, ends[1:])]
    return {
        "first_step_s": ends[0],
        "step_s": sum(steps) / len(steps),
        "validation_s": train_seconds - ends[-1],
        "startup_s": process_seconds - train_seconds,
    }


def extrapolate(t: dict[str, float], steps: int, n_val: int) -> float:
    """Seconds for a run of ``steps`` meta-steps with ``n_val`` validations."""
    return t["startup_s"] + t["first_step_s"] + (steps - 1) * t["step_s"] + n_val * t["validation_s"]


def time_run(run_dir: Path, n_steps: int, work: Path) -> dict[str, Any]:
    """Re-run ``run_dir``'s recorded config for ``n_steps`` steps in a fresh process; its timings."""
    recorded = json.loads((run_dir / "training.json").read_text(encoding="utf-8"))
    cfg = dict(recorded["config"])
    out = work / run_dir.name
    cfg |= {"output_dir": str(out), "max_steps": n_steps, "val_every": n_steps, "patience": 0,
            "checkpoint_every": n_steps, "log_every": 1}  # fmt: skip
    cfg_path = work / f"{run_dir.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, str(ROOT / "recipes" / "meta_train.py"), "--config", str(cfg_path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    process_seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    train_seconds = json.loads((out / "final" / "training.json").read_text(encoding="utf-8"))["train_seconds"]
    t = timings(metrics, cfg["meta_batch_size"], train_seconds, process_seconds)
    rc = recorded["config"]
    steps, n_val = recorded["step"], validations(recorded["step"], rc["val_every"], rc["max_steps"])
    row = {"run": run_dir.name, "timed_steps": n_steps, **{k: round(v, 3) for k, v in t.items()},
           "run_steps": steps, "run_validations": n_val, "estimate_min": round(extrapolate(t, steps, n_val) / 60, 1),
           "precision": rc["mixed_precision"], "val_episodes_per_lang": rc["data"].get("val_episodes")}  # fmt: skip
    if "train_seconds" in recorded:
        row["recorded_min"] = round(recorded["train_seconds"] / 60, 1)
    return row


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Wall time of the committed meta-training runs, re-timed",
        "",
        f"`python eval/perf/recipe_wall_time.py --steps {report['steps']}` ({report['started']} - {report['finished']}; "
        f"{m['cpus']} CPUs, torch {m['torch']}, 1-minute load average {m['loadavg_start'][0]:.2f} at start, "
        f"{m['loadavg_end'][0]:.2f} at end: about {m['cpus']} is this measurement alone on the cores). Each run's "
        f"recorded config re-run for {report['steps']} steps with today's code; the estimate is start-up + its "
        "steps + its validations (an upper bound: later steps reuse the activation cache the first ones fill). "
        "`recorded` is the run's own `train_seconds` where it kept one (it counts whatever else shared the "
        "machine meanwhile).",
        "",
        "| run (config) | precision | s / step | s / validation | start-up (s) | steps, validations | estimate (min) | recorded (min) |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in report["rows"]:
        name = f"`{r['run']}` (`{RUNS[r['run']]}.yaml`)" if r["run"] in RUNS else f"`{r['run']}`"
        lines.append(
            f"| {name} | {'fp32' if r['precision'] == 'no' else r['precision']} | {r['step_s']:.2f} | "
            f"{r['validation_s']:.0f} | {r['startup_s']:.0f} | {r['run_steps']}, {r['run_validations']} | "
            f"{r['estimate_min']:.0f} | {r.get('recorded_min', '–')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.runs or list(RUNS)
    missing = [n for n in names if not (args.runs_dir / n / "training.json").is_file()]
    if missing:
        raise SystemExit(f"no committed run (training.json) for {', '.join(missing)} under {args.runs_dir}")
    import torch

    report: dict[str, Any] = {
        "steps": args.steps,
        "started": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="xmeta-walltime-") as work:
        for name in names:
            row = time_run(args.runs_dir / name, args.steps, Path(work))
            print(json.dumps(row), flush=True)
            report["rows"].append(row)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M")
    report["machine"]["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(render_markdown(report), encoding="utf-8")
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
