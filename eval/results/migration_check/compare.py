"""Compare re-run benchmark cells with the committed standard benchmark's cells, episode by episode.

    python eval/results/migration_check/compare.py /tmp/bench_eq/cells meta_default=meta_eval_results_meta_runs_protonet_hr50_xl
    python eval/results/migration_check/compare.py /tmp/bench16/cells meta_eval_results_meta_runs_protomaml ...

Each argument after the cells directory is ``NEW`` or ``NEW=COMMITTED`` (cell-folder name prefixes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "eval" / "results" / "sib200_lowres" / "cells"
LANGS = ["swh_Latn", "yor_Latn", "hau_Latn", "amh_Ethi", "quy_Latn"]
KS = ("k1", "k5", "k10")


def cells(root: Path, prefix: str) -> dict[tuple[str, str], dict]:
    out = {}
    for k in KS:
        (folder,) = [p for p in (root / k).iterdir() if p.name.rsplit("-", 1)[0] == prefix]
        for lang in LANGS:
            out[(k, lang)] = json.loads((folder / f"{lang}.json").read_text(encoding="utf-8"))
    return out


def main() -> None:
    new_root, pairs = Path(sys.argv[1]), [a.partition("=") for a in sys.argv[2:]]
    rows = []
    for new_prefix, _, old_prefix in pairs:
        new, old = cells(new_root, new_prefix), cells(COMMITTED, old_prefix or new_prefix)
        same = all([e["pred"] for e in new[c]["episodes"]] == [e["pred"] for e in old[c]["episodes"]] for c in old)
        sys.stdout.write(f"{new_prefix}: identical predictions on every episode: {same}\n")
        for k in KS:
            a_new = [e["accuracy"] for lang in LANGS for e in new[(k, lang)]["episodes"]]
            a_old = [e["accuracy"] for lang in LANGS for e in old[(k, lang)]["episodes"]]
            mean_new, mean_old = 100 * sum(a_new) / len(a_new), 100 * sum(a_old) / len(a_old)
            rows.append(f"| {new_prefix} | {k} | {mean_new:.2f} | {mean_old:.2f} | {len(a_new)} |")
    sys.stdout.write("\n| method (re-run) | K | re-run mean acc | committed | episodes |\n|---|---|---|---|---|\n")
    sys.stdout.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
