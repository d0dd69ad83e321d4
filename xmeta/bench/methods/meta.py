"""``meta:<run dir>``: a meta-trained run (``meta:default`` is ``$XMETA_META_DEFAULT``), and its
test-time variants as their own rows: ``meta-ft:<run dir>`` (LoRA + head fine-tuned on the
support set) and ``meta-softkm:<run dir>`` (transductive prototype refinement with the queries);
``meta-ens:<run>+<run>[+...]`` averages the class probabilities of several runs (``xmeta.meta.ensemble``).

``describe`` reads the run's manifest without loading the model: its algorithm names the method in
tables, and the data meta-training saw is what the leakage check compares the episodes with.
"""

from __future__ import annotations

from xmeta.bench.methods.base import BuildContext, MethodInfo, MethodSpec, register_method
from xmeta.config import ConfigError
from xmeta.interfaces import Learner


def _build_meta(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.meta import MetaLearner, load_meta_model

    model = load_meta_model(spec.arg or "default")
    return MetaLearner(model, **ctx.options)


def _build_finetuned(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.meta import load_meta_model
    from xmeta.meta.test_time import FineTuneLearner

    return FineTuneLearner(load_meta_model(spec.arg or "default"), **ctx.options)


def _build_softkmeans(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.meta import load_meta_model
    from xmeta.meta.test_time import SoftKMeansLearner

    return SoftKMeansLearner(load_meta_model(spec.arg or "default"), **ctx.options)


def ensemble_members(spec: MethodSpec) -> list[str]:
    """The run dirs of ``meta-ens:<run>+<run>[+...]`` (at least two)."""
    members = [m for m in (spec.arg or "").split("+") if m]
    if len(members) < 2:
        raise ConfigError(
            f"{spec.name}: an ensemble names two or more runs joined by '+', e.g. meta-ens:default+runs/fomaml"
        )
    return members


def _build_ensemble(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.meta import MetaLearner, load_meta_model
    from xmeta.meta.ensemble import EnsembleLearner

    return EnsembleLearner([MetaLearner(load_meta_model(m), **ctx.options) for m in ensemble_members(spec)])


def _describe_ensemble(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    from xmeta.artifacts.training_data import TrainingData
    from xmeta.bench.metarun import read_meta_run

    runs = [read_meta_run(m) for m in ensemble_members(spec)]
    training = TrainingData.union([r.training for r in runs])
    details = {"members": [{"algorithm": r.algorithm, "checkpoint": str(r.checkpoint)} for r in runs],
               "training": training.summary()}  # fmt: skip
    label = f"ensemble of {len(runs)}: {' + '.join(r.algorithm for r in runs)}"
    if (precision := ctx.options.get("precision", "fp32")) != "fp32":
        label += f", {precision} inference"
        details["precision"] = precision
    return MethodInfo(spec.name, spec.kind, f"{spec.name} ({label})", details, training)


def _describe_meta(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    from xmeta.bench.metarun import read_meta_run

    run = read_meta_run(spec.arg or "default")
    details = {"algorithm": run.algorithm, "checkpoint": str(run.checkpoint), "training": run.training.summary()}
    label = run.algorithm
    if spec.kind == "meta-ft":
        label += f", fine-tuned {ctx.options['steps']} steps at lr {ctx.options['lr']:g}"
        details["test_time"] = {"finetune": dict(ctx.options)}
    elif spec.kind == "meta-softkm":
        label += f", transductive: soft k-means x{ctx.options['steps']}"
        details["test_time"] = {"soft_kmeans": dict(ctx.options)}
    if (precision := ctx.options.get("precision", "fp32")) != "fp32":
        label += f", {precision} inference"
        details["precision"] = precision
    return MethodInfo(spec.name, spec.kind, f"{spec.name} ({label})", details, run.training)


register_method(
    "meta",
    _build_meta,
    arg="required",
    arg_name="run dir",
    describe=_describe_meta,
    options={"batch_size": int, "inner_steps": int | None, "precision": "fp32"},  # MetaLearner's keywords
    help="meta-trained run: meta:<run dir> or meta:default",
)
register_method(
    "meta-ft",
    _build_finetuned,
    arg="required",
    arg_name="run dir",
    describe=_describe_meta,
    options={"steps": 10, "lr": 0.01, "batch_size": 64, "precision": "fp32"},  # FineTuneLearner's keywords
    help="a meta-trained run whose LoRA adapters and prototype-initialised linear head are fine-tuned on "
    "each support set (SGD) before predicting (P>M>F's fine-tuning stage)",
)
register_method(
    "meta-softkm",
    _build_softkmeans,
    arg="required",
    arg_name="run dir",
    describe=_describe_meta,
    options={"steps": 1, "batch_size": 64, "precision": "fp32"},  # SoftKMeansLearner's keywords
    help="TRANSDUCTIVE: a meta-trained run (prototype head) whose prototypes are refined with the "
    "unlabelled query set by soft k-means (uses the queries; class-balanced query sets flatter it)",
)
register_method(
    "meta-ens",
    _build_ensemble,
    arg="required",
    arg_name="run>+<run",
    describe=_describe_ensemble,
    options={"batch_size": int, "inner_steps": int | None, "precision": "fp32"},  # each member's MetaLearner
    help="an ensemble of meta-trained runs, e.g. meta-ens:default+runs/fomaml: each adapts to the support "
    "set, their class probabilities are averaged (the cost is the sum of the members')",
)
