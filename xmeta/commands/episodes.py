"""``xmeta episodes``: print N-way K-shot episodes of a corpus as JSON lines."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from xmeta.commands import add_command

EPILOG = """\
examples:
  xmeta episodes --task sib200 --langs swh_Latn --n-way 7 --k-shot 5 --q-query 5 --episodes 3
  xmeta episodes --task sib200 --langs eng_Latn --query-lang swh_Latn --k-shot 3 --episodes 2
  xmeta episodes --task afrisenti --langs hau --k-shot 8 --q-query 8 --support-split train --query-split dev
  xmeta episodes --task files --file swh_Latn:dev=dev.tsv --file swh_Latn:test=test.tsv --label-column topic

Each line is one episode: {"episode", "lang", "query_lang", "label_names", "support", "query"} with
support/query lists of {"uid", "text", "label", "label_name"}; labels are episode-local 0..N-1.
Episode i is fixed by the seed and the sizes: rerunning prints identical episodes, and
--start 5 --episodes 1 prints exactly the 6th episode of a longer run.
"""


DESCRIPTION = (
    "Draw few-shot episodes from a corpus (SIB-200, AfriSenti, or your own files) and print one JSON "
    "object per episode. Default protocol: support from the dev split, queries from the test split."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "episodes", "print N-way K-shot episodes of a corpus as JSON lines", DESCRIPTION, EPILOG)
    p.add_argument("--task", default="sib200", help="corpus name: sib200, afrisenti or files (default: sib200)")
    p.add_argument(
        "--langs",
        nargs="+",
        required=True,
        metavar="LANG",
        help="support language(s), FLORES-style (swh_Latn); space- or comma-separated; episodes are printed per language",
    )
    p.add_argument(
        "--query-lang", metavar="LANG", help="query language for cross-lingual episodes (default: same as support)"
    )
    p.add_argument("--n-way", type=int, default=None, help="classes per episode (default: all classes of the corpus)")
    p.add_argument("--k-shot", type=int, default=5, help="support examples per class (default: 5)")
    p.add_argument(
        "--q-query",
        default="5",
        metavar="Q",
        help="query examples per class, or 'all' for every remaining example (default: 5)",
    )
    p.add_argument("--support-split", default="dev", help="split to draw support from (default: dev)")
    p.add_argument("--query-split", default="test", help="split to draw queries from (default: test)")
    p.add_argument("--episodes", type=int, default=1, help="episodes per language (default: 1)")
    p.add_argument("--start", type=int, default=0, help="index of the first episode (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="episode seed (default: 0)")
    p.add_argument(
        "--on-small-class",
        choices=["error", "skip", "shrink"],
        default="error",
        help="a class with fewer than k+q examples: fail (default), never draw it, or use fewer examples",
    )
    p.add_argument("--data-dir", help="directory containing sib200/ and afrisenti/ (default: $XMETA_DATA_DIR)")
    files = p.add_argument_group("own files (--task files)")
    files.add_argument(
        "--file",
        action="append",
        dest="files",
        metavar="LANG:SPLIT=PATH",
        help="a TSV/CSV/JSONL file with a header (repeatable); without it --data-dir is read as <lang>/<split>.tsv",
    )
    files.add_argument("--text-column", default="text", help="header name of the text column (default: text)")
    files.add_argument("--label-column", default="label", help="header name of the label column (default: label)")
    files.add_argument(
        "--id-column", help="header name of an id column shared by translations (makes the corpus parallel)"
    )
    p.set_defaults(func=_run)


def _q_query(value: str) -> int | None:
    from xmeta.errors import InputError

    if value.strip().lower() == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"--q-query must be an integer or 'all', got {value!r}") from None


def _run(args: argparse.Namespace) -> int:
    from xmeta.data.episodes import EpisodeSampler
    from xmeta.data.schema import normalize_split
    from xmeta.data.tasks import load_task
    from xmeta.errors import InputError, writing

    if args.episodes < 0 or args.start < 0:
        raise InputError("--episodes and --start must be >= 0")
    langs = [lang for item in args.langs for lang in item.split(",") if lang]
    q_query = _q_query(args.q_query)
    options = {}
    if args.task == "files":
        options = {
            "files": args.files,
            "text_column": args.text_column,
            "label_column": args.label_column,
            "id_column": args.id_column,
        }
    elif args.files:
        raise InputError("--file is only used with --task files")
    splits = sorted({normalize_split(args.support_split), normalize_split(args.query_split)})
    needed = list(dict.fromkeys(langs + ([args.query_lang] if args.query_lang else [])))
    dataset = load_task(args.task, data_dir=args.data_dir, langs=needed, splits=splits, **options)
    sampler = EpisodeSampler(
        dataset,
        n_way=args.n_way,
        k_shot=args.k_shot,
        q_query=q_query,
        langs=langs,
        query_langs=args.query_lang,
        support_split=args.support_split,
        query_split=args.query_split,
        seed=args.seed,
        on_small_class=args.on_small_class,
    )
    try:
        with writing("standard output"):  # `> /dev/full`, or a redirect onto a full disk
            _write(sampler, langs=langs, query_lang=args.query_lang, args=args)
    except BrokenPipeError:
        # `xmeta episodes ... | head`: the reader left; stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _write(sampler: Any, langs: list[str], query_lang: str | None, args: argparse.Namespace) -> None:
    out = sys.stdout
    for lang in dict.fromkeys(langs):
        for index in range(args.start, args.start + args.episodes):
            ep = sampler.episode(index, lang=lang, query_lang=query_lang or lang)
            record = {
                "episode": ep.index,
                "lang": ep.lang,
                "query_lang": ep.query_lang,
                "seed": ep.seed,
                "label_names": list(ep.label_names),
                "support": [_example(e) for e in ep.support],
                "query": [_example(e) for e in ep.query],
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()


def _example(ex: Any) -> dict[str, Any]:
    return {"uid": ex.uid, "text": ex.text, "label": ex.label, "label_name": ex.label_name}
