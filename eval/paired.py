"""Paired differences between methods of one benchmark run, on the episodes they share.

    python eval/paired.py eval/results/sib200_lowres --against meta:eval/results/meta_runs/protonet_hr50_xl \\
        [--methods meta:eval/results/meta_runs/mamlpp_hr50 ...] [--save eval/results/sib200_lowres/paired.md]

Every method of the benchmark (or those given) against the reference, per K: the mean over
languages of the per-episode accuracy difference (same episode indices, checked), with a 95%
bootstrap interval that resamples episodes within languages -- the benchmark's stratified
interval applied to differences. Where the two methods do not both have a finished cell for every
language (a failed or missing cell), the difference is over the languages they share and says so
("on N of M languages"); none shared is "–". Most of the episode-to-episode spread is shared by two methods,
so this interval is much tighter than either method's own, and is the one that says whether two
rows of the results table differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xmeta.bench.stats import paired_difference
from xmeta.errors import writing


def load_cells(out: Path) -> dict[int, dict[str, dict[str, list[dict]]]]:
    """``k -> method -> lang -> episodes`` from ``<out>/cells/k<K>/<method>-<hash>/<lang>.json`` (ok cells)."""
    cells: dict[int, dict[str, dict[str, list[dict]]]] = {}
    for path in sorted((out / "cells").glob("k*/*/*.json")):
        cell = json.loads(path.read_text(encoding="utf-8"))
        if cell.get("status") == "ok":
            cells.setdefault(cell["k_shot"], {}).setdefault(cell["method"], {})[cell["lang"]] = cell["episodes"]
    if not cells:
        raise SystemExit(f"{out}: no finished benchmark cells under {out / 'cells'}")
    return cells


def paired(a: dict[str, list[dict]], b: dict[str, list[dict]]) -> tuple[float, tuple[float, float]]:
    """Mean over the shared languages of ``a - b`` per episode, and its stratified 95% interval."""
    langs = sorted(set(a) & set(b))
    if not langs:
        raise ValueError("the two methods share no finished language cell")
    for lang in langs:
        if [e["index"] for e in a[lang]] != [e["index"] for e in b[lang]]:
            raise SystemExit(f"{lang}: the two methods' cells hold different episodes")
    accuracies = lambda cells: {lang: [e["accuracy"] for e in cells[lang]] for lang in langs}  # noqa: E731
    return paired_difference(accuracies(a), accuracies(b))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    p.add_argument("out", type=Path, help="a benchmark's output directory (its cells/)")
    p.add_argument("--against", required=True, metavar="METHOD", help="the reference method spec")
    p.add_argument("--methods", nargs="*", default=None, help="methods to compare (default: every other one)")
    p.add_argument("--save", type=Path, default=None, help="also write the table to this Markdown file")
    args = p.parse_args(argv)
    cells = load_cells(args.out)
    known = sorted({m for by_method in cells.values() for m in by_method})
    for method in [args.against, *(args.methods or [])]:
        if method not in known:
            raise SystemExit(f"{method}: not in {args.out} (methods: {', '.join(known)})")
    methods = args.methods or [m for m in known if m != args.against]
    ks = sorted(cells)
    lines = [
        f"Paired differences to `{args.against}` (points, 95% interval; episodes resampled within languages):",
        "",
        "| method | " + " | ".join(f"K = {k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for method in methods:
        row = []
        for k in ks:
            a, b = cells[k].get(method, {}), cells[k].get(args.against, {})
            shared, every = set(a) & set(b), set().union(*cells[k].values())  # the K's languages
            if not shared:
                row.append("–")
                continue
            d, (lo, hi) = paired(a, b)
            partial = f" (on {len(shared)} of {len(every)} languages)" if shared != every else ""
            row.append(f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{partial}")
        lines.append(f"| `{method}` | " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    if args.save is not None:
        with writing(args.save, atomic=True) as tmp:
            Path(tmp).write_text(
                f"    python eval/paired.py {args.out} --against {args.against}\n\n" + text, encoding="utf-8"
            )
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
