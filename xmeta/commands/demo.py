"""``xmeta demo``: the main job on the embedded defaults (README's first set-up command)."""

from __future__ import annotations

import argparse

from xmeta.commands import add_command

DESCRIPTION = "Resolve the default models, load SIB-200, and run the end-to-end demonstration."


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "demo", "run the main job on the embedded defaults", DESCRIPTION)
    p.add_argument("--data-dir", help="directory holding sib200/ (default: $XMETA_DATA_DIR)")
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from xmeta.demo import run_demo

    return run_demo(data_dir=args.data_dir, out=args.out)
