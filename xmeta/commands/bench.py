"""``xmeta bench``: methods side by side on identical few-shot episodes, with intervals and cost."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from xmeta.commands import add_command

EPILOG_TAIL = """\
method options: method_options.<kind> in the config sets the options each kind declares (a misspelt
kind or option is refused before any work, naming the known ones), e.g.
  method_options: {icl: {openai: {base_url: http://127.0.0.1:8080/v1, scoring: loglik, max_concurrency: 4}}}
  (scoring: loglik = label log-likelihood via echoed logprobs; choice = parse a chat answer. The key is
  read from $OPENAI_API_KEY, never from a config. Responses are cached under $XMETA_CACHE/llm_responses.)
  missing_predictions=wrong|exclude: a query without a prediction counts as wrong (default) or is left
  out (reported as "answered queries only"); coverage is shown either way.

precedence: dataclass defaults < --config YAML < key=value overrides < flags.
Finished method x K x language cells are stored under OUT/cells and never recomputed: rerun the
same command to resume. Outputs: OUT/results.json, results.md, accuracy_*.png, config.yaml.

exit status: 0 every cell finished; 1 some cells failed (they are in results.md with their error,
the others are reported; rerun the same command to retry only those, or pass --keep-going to exit 0);
2 bad input or config, or an output that cannot be written (full disk, no permission).

examples:
  xmeta bench --config eval/configs/smoke.yaml
  xmeta bench --config eval/configs/sib200_lowres.yaml --methods frozen-proto,icl --k-shot 1,5
  xmeta bench --task sib200 --langs swh_Latn,yor_Latn --methods frozen-proto --episodes 5 bootstrap=5000
"""


def epilog() -> str:
    """The ``--help`` epilog: the registered methods (the registry is the only list), then usage notes."""
    from xmeta.bench.methods import methods_help

    return "methods (--methods, comma-separated):\n" + methods_help() + "\n\n" + EPILOG_TAIL


# flag dest -> BenchConfig field
FLAGS = {
    "data_dir": "data_dir",
    "task": "task",
    "langs": "langs",
    "methods": "methods",
    "n_way": "n_way",
    "k_shot": "k_shot",
    "q_query": "q_query",
    "episodes": "episodes_per_lang",
    "seed": "seed",
    "out": "out",
}


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


DESCRIPTION = (
    "Run N-way K-shot episodes per language (support from dev, queries from test by default), "
    "identical for every method; report accuracy and macro-F1 with bootstrap 95% intervals per "
    "language and for the mean over languages, plus seconds per episode, ms per query and peak RSS."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "bench",
        "benchmark methods on identical few-shot episodes (accuracy, macro-F1, 95%% CIs, cost)",
        DESCRIPTION,
        epilog(),
    )
    p.add_argument("--config", metavar="YAML", help="benchmark config (fields of xmeta.bench.BenchConfig)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. bootstrap=5000")
    p.add_argument("--data-dir", help="directory holding the corpora (default: $XMETA_DATA_DIR)")
    p.add_argument("--task", help="corpus: sib200, afrisenti or files")
    p.add_argument("--langs", type=_csv, metavar="A,B,C", help="evaluation languages, e.g. swh_Latn,yor_Latn")
    p.add_argument("--methods", type=_csv, metavar="M1,M2", help="method specs (see below)")
    p.add_argument("--n-way", type=int, metavar="N", help="classes per episode")
    p.add_argument(
        "--k-shot",
        type=lambda v: [int(x) for x in _csv(v)],
        metavar="K[,K...]",
        help="shots per class, one or several (1,5,10)",
    )
    p.add_argument("--q-query", type=int, metavar="Q", help="queries per class")
    p.add_argument("--episodes", type=int, metavar="E", help="episodes per language (and per K)")
    p.add_argument("--seed", type=int, help="fixes the episodes and the bootstrap")
    p.add_argument("--out", metavar="DIR", help="output directory (default: runs/bench)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="exit 0 even when some cells failed (they are still reported; default: exit 1)",
    )
    p.set_defaults(func=_run)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The flags that were given, as ``field=<JSON>`` overrides (JSON is YAML, so strings stay strings)."""
    out = []
    for dest, field in FLAGS.items():
        value: Any = getattr(args, dest, None)
        if value is not None:
            out.append(f"{field}={json.dumps(value)}")
    return out


def load_bench_config(args: argparse.Namespace):  # -> BenchConfig
    """The resolved config from --config, KEY=VALUE overrides and flags (raises ConfigError)."""
    from xmeta.bench.config import BenchConfig
    from xmeta.config import load_config

    return load_config(BenchConfig, args.config, [*args.overrides, *flag_overrides(args)])


def _run(args: argparse.Namespace) -> int:
    cfg = load_bench_config(args)  # a bad value stops here, before any data or model is loaded
    from xmeta.bench.report import failed_cells, per_k
    from xmeta.bench.runner import run_bench

    results = run_bench(cfg, progress=not args.no_progress)
    for k, res in per_k(results).items():
        for m in res["methods"].values():
            acc, ci = m["mean_accuracy"], m["mean_ci95"]
            score = "failed" if acc is None else f"{100 * acc:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
            flag = "" if m["complete"] else f" ({len(m['failed'])} language(s) failed)"
            sys.stdout.write(f"K={k} {m['display']}: {score}{flag}\n")
    sys.stdout.write(f"results: {cfg.out}/results.json, {cfg.out}/results.md\n")
    failed = failed_cells(results)
    if not failed:
        return 0
    total = sum(len(res["methods"]) for res in per_k(results).values()) * len(cfg.langs)
    retry = "rerun the same command" if cfg.retry_failed else "rerun with retry_failed=true"
    sys.stdout.flush()  # the summary above comes before the verdict below on a shared terminal
    sys.stderr.write(
        f"xmeta bench: {len(failed)} of {total} cells failed ({', '.join(failed[:3])}{', ...' if len(failed) > 3 else ''};"
        f" errors in {cfg.out}/results.md); {retry} to retry only those (finished cells are stored under "
        f"{cfg.out}/cells and never recomputed)\n"
    )
    return 0 if args.keep_going else 1
