"""``meta:<run dir>``: a meta-trained run (``meta:default`` is ``$XMETA_META_DEFAULT``).

``describe`` reads the run's manifest without loading the model: its algorithm names the method in
tables, and the data meta-training saw is what the leakage check compares the episodes with.
"""

from __future__ import annotations

from xmeta.bench.methods.base import BuildContext, MethodInfo, MethodSpec, register_method
from xmeta.interfaces import Learner


def _build_meta(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.meta import MetaLearner, load_meta_model

    model = load_meta_model(spec.arg or "default")
    return MetaLearner(model, **ctx.options)


def _describe_meta(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    from xmeta.bench.metarun import read_meta_run

    run = read_meta_run(spec.arg or "default")
    details = {"algorithm": run.algorithm, "checkpoint": str(run.checkpoint), "training": run.training.summary()}
    return MethodInfo(spec.name, spec.kind, f"{spec.name} ({run.algorithm})", details, run.training)


register_method(
    "meta",
    _build_meta,
    arg="required",
    arg_name="run dir",
    describe=_describe_meta,
    options={"batch_size": int, "inner_steps": int | None},  # MetaLearner's keywords
    help="meta-trained run: meta:<run dir> or meta:default",
)
