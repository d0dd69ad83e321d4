"""Choose between meta-trained runs on the wide validation set (never on evaluation languages).

    python eval/select_runs.py eval/results/meta_runs/protonet_hr50_xl runs/fomaml_hr50 ... \\
        [--langs val:wide74] [--episodes 4] [--out eval/results/selection]

The protocol is the recipes' meta-validation (``xmeta.training.validation``): 7-way 5-shot episodes
with 5 queries per class, support and queries from the dev split of each validation language, the
same episodes for every run. Each run's per-episode accuracies are stored in
``<out>/runs/<name>.json`` as soon as it is scored (a rerun skips runs already scored on the same
episodes); ``<out>/results.md`` ranks every run scored there on the same episodes (by this or an
earlier invocation) with 95% intervals and, against the best run,
paired differences (per-episode differences resampled within languages): the number to trust when
two runs are close, since most of the episode-to-episode spread is shared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

from tqdm.auto import tqdm

from xmeta.bench.stats import paired_difference
from xmeta.data.languages import expand_languages
from xmeta.errors import writing
from xmeta.training.validation import episode_accuracy, score, validation_episodes

log = logging.getLogger("select_runs")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])  # fmt: skip
    p.add_argument("runs", nargs="+", help="run directories or artifacts (anything `meta:` accepts, e.g. default)")
    p.add_argument("--langs", default="val:wide74", help="validation languages or a set name (default: val:wide74)")
    p.add_argument("--episodes", type=int, default=4, help="episodes per language (default: 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="corpus root (default: $XMETA_DATA_DIR)")
    p.add_argument("--out", default="eval/results/selection", help="output directory")
    p.add_argument("--finetune", action="append", default=[], metavar="STEPS:LR",
                   help="also score each run fine-tuned on each support set (meta-ft), e.g. --finetune 10:0.01 (repeatable)")  # fmt: skip
    p.add_argument("--ensemble", action="append", default=[], metavar="RUN+RUN[+...]",
                   help="also score the prediction ensemble of these runs (meta-ens: probabilities averaged), "
                        "e.g. --ensemble default+runs/fomaml (repeatable)")  # fmt: skip
    p.add_argument("--reference", default=None, metavar="RUN",
                   help="also give every run's paired difference to this one of the runs given (e.g. the shipped one)")  # fmt: skip
    return p.parse_args(argv)


def run_name(run: str) -> str:
    return run.rstrip("/").replace("/", "__").replace(":", "_")


def candidates(
    runs: list[str], finetune: list[str], ensembles: list[str] = ()
) -> list[tuple[str, str, dict[str, float]]]:
    """``(label, benchmark method spec, its options)`` for every run -- ``meta:RUN``, and
    ``meta-ft:RUN`` for each ``STEPS:LR`` -- then ``meta-ens:A+B`` for each ensemble."""
    out = []
    for run in runs:
        out.append((run, f"meta:{run}", {}))
        for spec in finetune:
            steps, _, lr = spec.partition(":")
            out.append((f"meta-ft[{steps}:{lr}]:{run}", f"meta-ft:{run}", {"steps": int(steps), "lr": float(lr)}))
    out += [(f"meta-ens:{members}", f"meta-ens:{members}", {}) for members in ensembles]
    return out


def build(method: str, options: dict[str, float]):
    """The learner and its label (the benchmark's, e.g. ``protonet, fine-tuned 10 steps at lr 0.01``)
    for one candidate, built by the benchmark's method registry as `xmeta bench` builds it."""
    from xmeta.bench.methods import BuildContext, build_learner, describe_method, parse_method

    spec = parse_method(method)
    ctx = BuildContext(task="sib200", encoder="multilingual-e5-small", options=options)
    info = describe_method(spec, ctx)
    return build_learner(spec, ctx), info.display.removeprefix(f"{spec.name} (").removesuffix(")")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.reference is not None and args.reference not in args.runs:
        raise SystemExit(f"--reference {args.reference}: not one of the runs given ({', '.join(args.runs)})")
    langs = expand_languages(args.langs.split(","))
    episodes = validation_episodes("sib200", langs, n_way=7, k_shot=5, q_query=5, episodes_per_lang=args.episodes,
                                   seed=args.seed, data_dir=args.data_dir)  # fmt: skip
    fingerprint = hashlib.sha256(
        json.dumps([[e.uid for e in ep.support + ep.query] for ep in episodes]).encode()
    ).hexdigest()
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    scored: dict[str, dict] = {}
    for label, method, options in candidates(args.runs, args.finetune, args.ensemble):
        path = out / "runs" / f"{run_name(label)}.json"
        if path.exists() and (prev := json.loads(path.read_text(encoding="utf-8"))).get("fingerprint") == fingerprint:
            log.info("%s: already scored on these episodes", label)
            scored[label] = prev
            continue
        learner, algorithm = build(method, options)
        accuracies = [episode_accuracy(learner, ep) for ep in tqdm(episodes, desc=label, file=sys.stderr)]
        result = score(episodes, accuracies)
        by_lang: dict[str, list[float]] = {}
        for ep, acc in zip(episodes, accuracies):
            by_lang.setdefault(ep.lang, []).append(acc)
        scored[label] = {"run": label, "algorithm": algorithm, "fingerprint": fingerprint, **result.to_dict(),
                         "per_episode": by_lang}  # fmt: skip
        with writing(path, atomic=True) as tmp:
            Path(tmp).write_text(json.dumps(scored[label], indent=1) + "\n", encoding="utf-8")
        log.info("%s: %.4f [%.4f, %.4f]", label, result.accuracy, *result.ci)
    for path in sorted((out / "runs").glob("*.json")):  # runs scored by earlier invocations on these episodes
        prev = json.loads(path.read_text(encoding="utf-8"))
        if prev.get("fingerprint") == fingerprint:
            scored.setdefault(prev["run"], prev)
    ranked = sorted(scored.values(), key=lambda r: -r["accuracy"])
    best = ranked[0]
    reference = next(r for r in ranked if r["run"] == args.reference) if args.reference else None
    lines = [
        "# Choosing between runs: the wide validation set",
        "",
        f"{len(langs)} validation languages (`{args.langs}`; never evaluation or training languages) x {args.episodes} "
        f"episodes, 7-way 5-shot, 5 queries per class, support and queries from dev (`xmeta.training.validation`); "
        f"{ranked[0]['episodes']} episodes, {ranked[0]['queries']} queries per run, the same for every run.",
        "Accuracy: mean over languages of the per-episode accuracy, 95% bootstrap interval (episodes resampled within "
        "languages); the paired difference to the best run resamples per-episode differences.",
        "",
        f"    python eval/select_runs.py {' '.join(args.runs)} --langs {args.langs} --episodes {args.episodes}"
        + "".join(f" --finetune {f}" for f in args.finetune)
        + "".join(f" --ensemble {e}" for e in args.ensemble)
        + (f" --reference {args.reference}" if args.reference else ""),
        "",
        "| run | algorithm | accuracy (%) | 95% interval | difference to the best (paired, points) |"
        + (f" difference to `{reference['run']}` (paired, points) |" if reference else ""),
        "|---|---|---:|---|---|" + ("---|" if reference else ""),
    ]

    def difference(r: dict, to: dict) -> str:
        if r is to:
            return "–"
        d, (lo, hi) = paired_difference(r["per_episode"], to["per_episode"])
        return f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"

    for r in ranked:
        lo, hi = r["ci"]
        lines.append(f"| `{r['run']}` | {r['algorithm']} | {100 * r['accuracy']:.1f} ± {50 * (hi - lo):.1f} | "
                     f"[{100 * lo:.1f}, {100 * hi:.1f}] | {difference(r, best)} |"
                     + (f" {difference(r, reference)} |" if reference else ""))  # fmt: skip
    with writing(out / "results.md", atomic=True) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with writing(out / "results.json", atomic=True) as tmp:
        summary = [{k: v for k, v in r.items() if k != "per_episode"} for r in ranked]
        Path(tmp).write_text(json.dumps({"langs": langs, "episodes_per_lang": args.episodes, "runs": summary}, indent=1) + "\n",
                             encoding="utf-8")  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
