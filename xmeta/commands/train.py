"""``xmeta train``: run the meta-training recipe (same code as ``python recipes/meta_train.py``)."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from xmeta.errors import XmetaError

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="meta-train adapters + head on high-resource languages (recipes/meta_train.py)",
        description=(
            "Runs recipes/meta_train.py in this process. For several processes or GPUs use "
            "`accelerate launch [--num_processes N] recipes/meta_train.py --config ...` (identical behaviour)."
        ),
        epilog="Example: xmeta train --config recipes/configs/default.yaml max_steps=100 output_dir=runs/try1",
    )
    p.add_argument("--config", help="YAML config (see recipes/configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the output_dir's latest checkpoint")
    p.add_argument("--recipe", default=str(RECIPES / "meta_train.py"), help="recipe file to run")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. meta.inner_steps=3")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    recipe = Path(args.recipe)
    if not recipe.is_file():
        raise XmetaError(f"recipe not found: {recipe} (recipes ship with the source tree; clone the repository)")
    argv = [str(recipe)] + (["--config", args.config] if args.config else []) + (["--resume"] if args.resume else [])
    saved, sys.argv = sys.argv, argv + list(args.overrides)
    try:
        module = runpy.run_path(str(recipe), run_name="xmeta_recipe")
        return int(module["main"](sys.argv[1:]) or 0)
    finally:
        sys.argv = saved
