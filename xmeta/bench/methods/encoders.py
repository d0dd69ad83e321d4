"""Encoder-based methods: ``frozen-proto``, ``finetune``, ``logreg[:<encoder>]``, ``setfit[:<encoder>]``.

Each kind's options are parsed into the wired module's own config here, in ``describe`` as well
as in ``build``, so a bad value is refused before the first episode runs.
"""

from __future__ import annotations

from typing import Any, Literal

from xmeta.bench.methods.base import BuildContext, MethodInfo, MethodSpec, fields_of, register_method
from xmeta.config import from_dict
from xmeta.interfaces import Learner

# ``method_options.<kind>.encoder``: EncoderConfig fields on top of the benchmark's ``encoder``.
ENCODER_OPTION = {"encoder": dict}


def _encoder_config(spec: MethodSpec, model: str, options: dict[str, Any]) -> Any:
    """The ``EncoderConfig`` of ``model`` with the ``encoder`` option (popped from ``options``) applied."""
    from xmeta.models.encoder import EncoderConfig

    overrides = {"model": model, **options.pop("encoder", {})}
    return from_dict(EncoderConfig, overrides, prefix=f"method_options.{spec.kind}.encoder.")


# ---- frozen-proto: prototypes of the pretrained encoder ----


def _frozen_options(spec: MethodSpec, ctx: BuildContext) -> tuple[Any, dict[str, Any]]:
    options = dict(ctx.options)
    return _encoder_config(spec, ctx.encoder, options), options  # the rest: FrozenProtoLearner's keywords


def _build_frozen_proto(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.meta import FrozenProtoLearner

    enc, options = _frozen_options(spec, ctx)
    return FrozenProtoLearner.from_config(enc, **options)


def _describe_frozen(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    enc, options = _frozen_options(spec, ctx)
    return MethodInfo(spec.name, spec.kind, spec.name, {"encoder": enc.model, **options})


# ---- finetune: LoRA fine-tuning on the support set ----


def _finetune_schema() -> dict[str, Any]:
    from xmeta.meta import FinetuneConfig

    return {**ENCODER_OPTION, "predict_batch_size": 64, **fields_of(FinetuneConfig)}


def _finetune_options(spec: MethodSpec, ctx: BuildContext) -> tuple[Any, Any, int]:
    from xmeta.meta import FinetuneConfig

    options = dict(ctx.options)
    enc = _encoder_config(spec, ctx.encoder, options)
    batch_size = options.pop("predict_batch_size")
    return enc, from_dict(FinetuneConfig, options, prefix=f"method_options.{spec.kind}."), batch_size


def _build_finetune(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.meta import FinetuneLearner
    from xmeta.models.encoder import Encoder

    enc, ft, batch_size = _finetune_options(spec, ctx)
    return FinetuneLearner(Encoder.from_config(enc), ft, batch_size=batch_size)


def _describe_finetune(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    enc, ft, _ = _finetune_options(spec, ctx)
    return MethodInfo(spec.name, spec.kind, spec.name, {"encoder": enc.model, "lora_r": enc.lora_r, "steps": ft.steps})


# ---- logreg: MTEB's logistic-regression probe on frozen embeddings ----


def _logreg_schema() -> dict[str, Any]:
    from xmeta.peers.logreg import LogRegConfig

    return {**ENCODER_OPTION, **fields_of(LogRegConfig)}


def _logreg_options(spec: MethodSpec, ctx: BuildContext) -> tuple[Any, Any]:
    from xmeta.peers.logreg import LogRegConfig

    options = dict(ctx.options)
    enc = _encoder_config(spec, spec.arg or ctx.encoder, options)
    return enc, from_dict(LogRegConfig, options, prefix=f"method_options.{spec.kind}.")


def _build_logreg(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.peers.logreg import LogRegLearner

    enc, cfg = _logreg_options(spec, ctx)
    return LogRegLearner.from_config(enc, cfg)


def _describe_logreg(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    enc, cfg = _logreg_options(spec, ctx)
    return MethodInfo(spec.name, spec.kind, spec.name, {"encoder": enc.model, "C": cfg.C, "normalize": cfg.normalize})


# ---- setfit: the setfit library's contrastive fine-tuning + logistic head ----


def _setfit_schema() -> type:
    from xmeta.peers.setfit_learner import SetFitConfig

    return SetFitConfig


def _setfit_config(spec: MethodSpec, ctx: BuildContext) -> tuple[str, Any]:
    from xmeta.peers.setfit_learner import SetFitConfig

    return spec.arg or ctx.encoder, SetFitConfig(**ctx.options)  # checked against SetFitConfig already


def _build_setfit(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.peers.setfit_learner import SetFitLearner

    model, cfg = _setfit_config(spec, ctx)
    return SetFitLearner(model, cfg)


def _describe_setfit(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    model, cfg = _setfit_config(spec, ctx)
    details = {"encoder": model, "batch_size": cfg.batch_size, "num_epochs": cfg.num_epochs}
    return MethodInfo(spec.name, spec.kind, spec.name, {**details, "body_learning_rate": cfg.body_learning_rate})


register_method(
    "frozen-proto",
    _build_frozen_proto,
    describe=_describe_frozen,
    options={
        **ENCODER_OPTION,
        "distance": Literal["euclidean", "cosine"],
        "temperature": float | None,
        "batch_size": int,
    },
    help="prototypes of the frozen encoder",
)
register_method(
    "finetune",
    _build_finetune,
    describe=_describe_finetune,
    options=_finetune_schema,
    help="LoRA fine-tuning on the support set",
)
register_method(
    "logreg",
    _build_logreg,
    arg="optional",
    arg_name="encoder",
    describe=_describe_logreg,
    options=_logreg_schema,
    help="logistic regression on frozen mean-pooled embeddings (MTEB's probe); logreg:<encoder> for another",
)
register_method(
    "setfit",
    _build_setfit,
    arg="optional",
    arg_name="encoder",
    describe=_describe_setfit,
    options=_setfit_schema,
    help="SetFit (the setfit library): contrastive fine-tuning + logistic head; setfit:<encoder> for another",
)
