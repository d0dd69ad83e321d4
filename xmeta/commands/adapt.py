"""``xmeta adapt``: adapt a meta-trained model to a few labelled examples and save the result."""

from __future__ import annotations

import argparse
import sys

from xmeta.commands import add_command

EPILOG = """\
support file: TSV, CSV or JSONL with a header; one labelled text per row. Rules:
  empty/whitespace-only texts    dropped, count logged and written to the model card
  exact duplicate rows           dropped and reported (file:line); same text, two labels: error
  more than --max-per-class      seeded random subsample per class (file order kept), with a notice
  fewer than 2 classes, a --labels label with no example, an unknown label, an empty label: error

output DIR: params.safetensors (adapted adapters + head/prototypes), xmeta.json (manifest: labels,
configs, support statistics, sha256 of every file), adapter/ (peft's format + head.safetensors: the
classifier in plain transformers + peft), README.md (model card). Use it with `xmeta predict --model DIR`.

examples:
  xmeta adapt --support swh_dev.tsv --lang swh_Latn --out models/swh
  xmeta adapt --support reviews.csv --text-column review --label-column stars --model runs/protonet --out models/rev
  xmeta predict --model models/swh --input sentences.txt
"""


DESCRIPTION = (
    "Run the meta-learned adaptation (the algorithm's inner loop, or prototypes for protonet) on a "
    "small labelled support set and save a small artifact (only the adapted tensors; the backbone is "
    "re-resolved from the model zoo)."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "adapt", "adapt a meta-trained model to a few labelled examples of a new language", DESCRIPTION, EPILOG
    )
    p.add_argument("--support", required=True, metavar="FILE", help="labelled examples (TSV/CSV/JSONL with a header)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the adapted model to")
    p.add_argument(
        "--model",
        default="default",
        metavar="RUN_DIR|default",
        help="meta-training run directory (or its final/), or 'default' for the adapter shipped with xmeta",
    )
    p.add_argument("--text-column", default="text", help="header name of the text column (default: text)")
    p.add_argument("--label-column", default="label", help="header name of the label column (default: label)")
    p.add_argument("--labels", metavar="A,B,...", help="the expected labels (and their order); default: those found")
    p.add_argument("--lang", help="FLORES-style code of the support language, e.g. swh_Latn (for the model card)")
    p.add_argument("--max-per-class", type=int, default=None, metavar="N", help="most examples per class (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsampling and adaptation (default: 0)")
    p.add_argument("--inner-steps", type=int, metavar="N", help="adaptation steps (default: the model's setting)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from xmeta.adaptation import DEFAULT_MAX_PER_CLASS, adapt
    from xmeta.errors import InputError

    max_per_class = DEFAULT_MAX_PER_CLASS if args.max_per_class is None else args.max_per_class
    if max_per_class < 1:
        raise InputError(f"--max-per-class must be >= 1, got {max_per_class}")
    if args.inner_steps is not None and args.inner_steps < 0:
        raise InputError(f"--inner-steps must be >= 0, got {args.inner_steps}")
    labels = [v.strip() for v in args.labels.split(",") if v.strip()] if args.labels else None
    predictor = adapt(
        args.support,
        args.model,
        lang=args.lang,
        labels=labels,
        max_per_class=max_per_class,
        seed=args.seed,
        text_column=args.text_column,
        label_column=args.label_column,
        inner_steps=args.inner_steps,
    )
    out = predictor.save(args.out)
    per_class = predictor.metadata["support"]["per_class"]
    counts = ", ".join(f"{k} {v}" for k, v in per_class.items())
    sys.stdout.write(
        f"adapted to {len(per_class)} labels from {sum(per_class.values())} examples ({predictor.lang}): {counts}\n"
        f"saved to {out} (see {out / 'README.md'}); predict with: xmeta predict --model {out} --input FILE\n"
    )
    return 0
