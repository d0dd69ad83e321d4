"""The ``xmeta`` console script: one subcommand per workflow.

Each subcommand lives in ``xmeta/commands/<name>.py`` and exposes ``register(subparsers)``;
heavy imports (torch, transformers) happen inside the command handlers so ``xmeta --help``
stays instant. Errors caused by input (XmetaError) are reported in one line with exit code 2, and
so is a write the machine refused (full disk, no permission, read-only file system) wherever it
happens: xmeta's write points name the path they were writing (``xmeta.errors.writing``), and any
other such OSError is reported with the file name it carries.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from xmeta.errors import NO_SPACE_ERRNOS, WRITE_ERRNOS, WriteError, XmetaError, os_errno
from xmeta.registry import UnknownNameError

# Order is the order shown by `xmeta --help`.
COMMANDS = ["demo", "models", "episodes", "recipes", "train", "bench", "adapt", "predict", "serve", "artifacts"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmeta",
        description=(
            "Cross-lingual few-shot NLP: meta-train multilingual encoders (MAML/ProtoNet over LoRA) on "
            "high-resource languages, benchmark them against in-context prompting on low-resource "
            "languages, and adapt to a new language from a few examples."
        ),
        epilog="Run `xmeta COMMAND --help` for the options of a command.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"xmeta.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (XmetaError, UnknownNameError) as err:
        sys.stderr.write(f"xmeta {args.command}: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as err:  # a refused write that no write point wrapped (see xmeta.errors.writing)
        code = os_errno(err)
        if code not in WRITE_ERRNOS:
            raise
        # Its path is the file name the OSError carries, if any; it may have been a read.
        verb = "write" if code in NO_SPACE_ERRNOS else "access"
        sys.stderr.write(f"xmeta {args.command}: error: {WriteError(getattr(err, 'filename', None), err, verb)}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
