"""``xmeta train``: run a meta-training recipe (same code as ``python recipes/meta_train.py``)."""

from __future__ import annotations

import argparse
import runpy
import sys

from xmeta.commands import add_command

EPILOG = """\
recipes and configs ship with xmeta; `xmeta recipes list` shows them. --config takes a packaged
config's name (protonet, or protonet.yaml) or the path of your own YAML file; --recipe takes a
recipe's name (meta_train, the default) or the path of a recipe file.

examples:
  xmeta train --config protonet output_dir=runs/protonet
  xmeta train --config protomaml max_steps=100 meta.inner_steps=3 output_dir=runs/try1
  xmeta train --config protonet_hr50_xl --print-config     # the effective config (bases + overrides)
  xmeta train --config my_config.yaml --resume
  accelerate launch --num_processes 2 $(xmeta recipes path meta_train) --config $(xmeta recipes path protonet)
"""


DESCRIPTION = (
    "Runs a recipe (default: meta_train, i.e. recipes/meta_train.py) in this process.\n"
    "For several processes or GPUs, launch the recipe file with `accelerate launch` (identical\n"
    "behaviour; see the last example)."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "train", "meta-train adapters + head on high-resource languages (recipe meta_train)", DESCRIPTION, EPILOG
    )
    p.add_argument("--config", metavar="NAME|FILE", help="packaged config name (see `xmeta recipes list`) or YAML file")
    p.add_argument("--resume", action="store_true", help="continue from the output_dir's latest checkpoint")
    p.add_argument(
        "--print-config", action="store_true", help="print the effective config as YAML and exit without training"
    )
    p.add_argument(
        "--recipe", default="meta_train", metavar="NAME|FILE", help="recipe name or .py file (default: meta_train)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. meta.inner_steps=3")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from xmeta.recipes_index import config_path, recipe_path

    recipe = recipe_path(args.recipe)
    config = ["--config", str(config_path(args.config))] if args.config else []
    flags = [flag for flag, on in (("--resume", args.resume), ("--print-config", args.print_config)) if on]
    argv = [str(recipe), *config, *flags]
    saved, sys.argv = sys.argv, argv + list(args.overrides)
    try:
        module = runpy.run_path(str(recipe), run_name="xmeta_recipe")
        return int(module["main"](sys.argv[1:]) or 0)
    finally:
        sys.argv = saved
