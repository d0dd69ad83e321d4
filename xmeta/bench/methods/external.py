"""``external:<file>``: predictions made elsewhere (JSONL/CSV ``uid,label``), scored on the same episodes."""

from __future__ import annotations

from pathlib import Path

from xmeta.bench.methods.base import BuildContext, MethodInfo, MethodSpec, register_method
from xmeta.errors import InputError
from xmeta.interfaces import Learner


def _build_external(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.icl import ExternalLearner

    return ExternalLearner(Path(spec.arg or ""), **ctx.options)


def _describe_external(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    path = Path(spec.arg or "")
    if not path.is_file():
        raise InputError(f"{spec.name}: predictions file not found: {path}")
    return MethodInfo(spec.name, spec.kind, f"external:{path.name}", {"file": str(path)})


register_method(
    "external",
    _build_external,
    arg="required",
    arg_name="file",
    describe=_describe_external,
    options={"name": str},  # ExternalLearner's label for reports (default: the file name)
    help="predictions made elsewhere (JSONL/CSV uid,label); a query without one counts as wrong (coverage is reported)",
)
