"""One module per ``xmeta`` subcommand, each with ``register(subparsers)`` (see ``xmeta.cli``)."""

from __future__ import annotations

import argparse
import textwrap


def add_command(
    sub: argparse._SubParsersAction, name: str, help: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """The parser of one subcommand: ``help`` is its line in ``xmeta --help``; with an ``epilog``
    (examples, tables) the texts are kept as written, without one the description is re-wrapped."""
    if not epilog:
        return sub.add_parser(name, help=help, description=description)
    wrapped = "\n".join(textwrap.fill(line, 100) for line in description.split("\n"))
    return sub.add_parser(
        name, help=help, description=wrapped, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
