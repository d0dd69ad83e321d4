"""``xmeta artifacts``: verify, migrate and publish meta-trained models and adapted classifiers."""

from __future__ import annotations

import argparse
import sys

from xmeta.commands import add_command

EPILOG = """\
An artifact is a directory with xmeta.json (kind, configs, training data, sha256 of every file),
params.safetensors, adapter/ (peft's format + head.safetensors) and a model card. Every load
verifies it; `verify` does the same check on demand and reports what it costs.

examples:
  xmeta artifacts verify default runs/protonet/final models/swh
  xmeta artifacts migrate eval/results/meta_runs/fomaml --data-dir ../shared/data
  xmeta artifacts push models/swh my-org/xmeta-swh-topics      # needs the Hub and a token
"""


DESCRIPTION = "Check, upgrade and publish xmeta artifacts (the directories `xmeta train` and `xmeta adapt` write)."


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "artifacts", "verify, migrate or push meta-trained models and adapted classifiers", DESCRIPTION, EPILOG
    )
    asub = p.add_subparsers(dest="artifacts_command", metavar="ACTION", required=True)
    vf = asub.add_parser("verify", help="check every file of artifacts against its size and sha256")
    vf.add_argument(
        "names", nargs="+", metavar="DIR", help="`default`, a run, final/, best/, a checkpoint or an adapted model"
    )
    vf.set_defaults(func=_verify)
    mg = asub.add_parser(
        "migrate",
        help="rewrite artifacts of the format before xmeta/2 (adds digests, the training ids and peft's export)",
    )
    mg.add_argument("names", nargs="+", metavar="DIR", help="old artifact directories (rewritten in place, atomically)")
    mg.add_argument("--data-dir", help="data directory to read an old run's training ids from ($XMETA_DATA_DIR)")
    mg.set_defaults(func=_migrate)
    ps = asub.add_parser("push", help="verify an artifact and upload it to a Hugging Face Hub model repository")
    ps.add_argument("name", metavar="DIR", help="the artifact directory")
    ps.add_argument("repo_id", metavar="REPO", help="Hub repository id, e.g. my-org/xmeta-swh-topics")
    ps.add_argument("--private", action="store_true", help="create the repository as private")
    ps.set_defaults(func=_push)


def _find(name: str):
    from xmeta.artifacts import ArtifactError, resolve

    try:
        return resolve(name, "meta")
    except ArtifactError as err:
        if "adapted model" not in str(err):
            raise
        return resolve(name, "adapted")


def _verify(args: argparse.Namespace) -> int:
    from xmeta.artifacts import read_manifest, verify

    for name in args.names:
        manifest = read_manifest(_find(name))
        seconds = verify(manifest)
        size = sum(f.bytes for f in manifest.files.values())
        state = (
            f"old format {manifest.legacy}: no digests to check (`xmeta artifacts migrate {manifest.root}`)"
            if manifest.legacy
            else f"ok: {len(manifest.files)} files, {size / 1e6:.1f} MB verified in {seconds:.3f}s"
        )
        sys.stdout.write(f"{manifest.root} [{manifest.kind}, {manifest.meta.get('algorithm')}]: {state}\n")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from xmeta.meta.migrate import migrate

    for name in args.names:
        out, what = migrate(_find(name), data_dir=args.data_dir)
        sys.stdout.write(f"{out}: {what}\n")
    return 0


def _push(args: argparse.Namespace) -> int:
    from xmeta.artifacts import push_to_hub

    sys.stdout.write(push_to_hub(_find(args.name), args.repo_id, private=args.private) + "\n")
    return 0
