"""Benchmark methods by name: ``frozen-proto``, ``finetune``, ``meta:<run>``, ``icl:<llm>``, ...

A method spec is ``kind`` or ``kind:arg``. Each kind is registered in :data:`METHODS` with two
functions: ``describe`` (cheap, no model loaded: display name, meta-training data for the leakage
check) and ``build`` (loads the model and returns a :class:`~xmeta.interfaces.Learner`). Any
learner that implements the protocol can be plugged in with :func:`register_method`::

    register_method("knn", lambda spec, ctx: KnnLearner(ctx.encoder, **ctx.options))
    # then: xmeta bench --methods knn,frozen-proto ...

The ``_build_*`` adapters below are the only places that know the constructors of the data,
core and ICL modules, so re-wiring one of them is a one-line change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xmeta.config import ConfigError, from_dict
from xmeta.errors import InputError
from xmeta.interfaces import Learner
from xmeta.registry import Registry, did_you_mean

ArgRule = Literal["none", "optional", "required"]
DEFAULT_LLM = "gemma-3-270m"
# Prompt template of the ICL baseline per corpus; other tasks set method_options.icl.template.
TEMPLATE_BY_TASK = {"sib200": "topic", "afrisenti": "sentiment"}


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method spec: ``name`` is the spec as written (the key in results)."""

    name: str
    kind: str
    arg: str | None


@dataclass(frozen=True)
class BuildContext:
    """What a method factory gets besides its spec.

    Attributes:
        task: The benchmark's task name.
        encoder: Encoder of the encoder-based baselines (zoo name or path).
        options: ``method_options[kind]`` from the config.
    """

    task: str
    encoder: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodInfo:
    """What the results say about a method, known before anything runs.

    Attributes:
        name: The spec, e.g. ``meta:runs/protomaml``.
        kind: The registered kind.
        display: Name for tables and plots (meta runs show their algorithm).
        details: JSON-able facts (algorithm, run dir, model, file).
        training: For meta-trained methods: the data meta-training saw (leakage check input).
    """

    name: str
    kind: str
    display: str
    details: dict[str, Any] = field(default_factory=dict)
    training: Any = None  # xmeta.artifacts.TrainingData | None


Describe = Callable[[MethodSpec, BuildContext], MethodInfo]
Build = Callable[[MethodSpec, BuildContext], Learner]


@dataclass(frozen=True)
class MethodKind:
    """A registered kind of method: its argument rule, describe and build functions."""

    name: str
    build: Build
    describe: Describe
    arg: ArgRule = "none"
    default_arg: str | None = None
    help: str = ""
    arg_name: str = "arg"

    @property
    def form(self) -> str:
        """How a spec of this kind is written, e.g. ``meta:<run dir>`` or ``icl[:<llm>]``."""
        return {"none": self.name, "optional": f"{self.name}[:<{self.arg_name}>]"}.get(
            self.arg, f"{self.name}:<{self.arg_name}>"
        )


METHODS: Registry[MethodKind] = Registry("method")


def _describe_plain(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    return MethodInfo(spec.name, spec.kind, spec.name, {"arg": spec.arg} if spec.arg else {})


def register_method(
    name: str,
    build: Build,
    *,
    arg: ArgRule = "none",
    default_arg: str | None = None,
    describe: Describe | None = None,
    help: str = "",
    arg_name: str = "arg",
    overwrite: bool = False,
) -> MethodKind:
    """Register a method kind so configs and ``--methods`` can name it.

    Args:
        name: The kind (the part of a spec before ``:``); must not contain ``:``.
        build: ``(spec, ctx) -> Learner``; called once per run, before the method's first cell.
        arg: Whether ``kind:arg`` takes no, an optional or a required argument.
        default_arg: The argument when ``arg="optional"`` and none is given.
        describe: ``(spec, ctx) -> MethodInfo`` without loading a model (default: the spec).
        help: One line for ``xmeta bench --help``.
        arg_name: What the argument is, for ``--help`` (``meta:<run dir>``).
        overwrite: Replace an existing kind of that name (tests, notebooks).

    Returns:
        The registered kind.
    """
    if ":" in name:
        raise ValueError(f"method kind {name!r} must not contain ':'")
    kind = MethodKind(name, build, describe or _describe_plain, arg, default_arg, help, arg_name)
    if overwrite and name in METHODS:
        METHODS._items[name] = kind  # the shared Registry has no replace; overwriting is opt-in here
    else:
        METHODS.add(name, kind)
    return kind


def parse_method(spec: str) -> MethodSpec:
    """Parse ``kind`` or ``kind:arg``; unknown kinds get a did-you-mean error.

    Raises:
        UnknownNameError: Unknown kind.
        ValueError: A missing required argument or an argument a kind does not take.
    """
    spec = spec.strip()
    kind_name, _, arg = spec.partition(":")
    kind = METHODS.get(kind_name)
    arg_value: str | None = arg.strip() or None
    if kind.arg == "none" and arg_value is not None:
        raise ValueError(f"method {kind_name!r} takes no argument, got {spec!r}")
    if kind.arg == "required" and arg_value is None:
        raise ValueError(f"method {kind_name!r} needs an argument: {kind_name}:<...> ({kind.help})")
    if arg_value is None:
        arg_value = kind.default_arg
    return MethodSpec(spec, kind_name, arg_value)


def describe_method(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    """Cheap facts about a method (raises InputError for a missing run dir or file)."""
    return METHODS.get(spec.kind).describe(spec, ctx)


def build_learner(spec: MethodSpec, ctx: BuildContext) -> Learner:
    """Load the method's learner (the expensive step, done once per method and run)."""
    return METHODS.get(spec.kind).build(spec, ctx)


def methods_help(width: int = 100) -> str:
    """One entry per registered kind (the ``xmeta bench --help`` epilog is written from it)."""
    import textwrap

    lines = []
    for name in METHODS:
        kind = METHODS.get(name)
        text = kind.help or "(no description)"  # wrap("") gives no line at all, which would hide the method
        lines += textwrap.wrap(text, width, initial_indent=f"  {kind.form:<18} ", subsequent_indent=" " * 21)
    return "\n".join(lines)


# ---- adapters to the core, ICL and external-predictions modules (the only wiring points) ----
# Options are parsed into the modules' own typed configs in `describe` as well as in `build`, so a
# typo in method_options is refused before the first episode runs, not when the method's turn comes.


def _encoder_config(ctx: BuildContext, options: dict[str, Any]) -> Any:
    from xmeta.models.encoder import EncoderConfig

    return from_dict(EncoderConfig, {"model": ctx.encoder, **options.pop("encoder", {})}, prefix="encoder.")


def _frozen_options(spec: MethodSpec, ctx: BuildContext) -> tuple[Any, dict[str, Any]]:
    options = dict(ctx.options)
    enc = _encoder_config(ctx, options)
    unknown = set(options) - {"distance", "temperature", "batch_size"}
    if unknown:
        raise ConfigError(
            did_you_mean(
                sorted(unknown)[0], ["distance", "temperature", "batch_size", "encoder"], "frozen-proto option"
            )
        )
    return enc, options


def _finetune_options(spec: MethodSpec, ctx: BuildContext) -> tuple[Any, Any, int]:
    from xmeta.meta import FinetuneConfig

    options = dict(ctx.options)
    enc = _encoder_config(ctx, options)
    batch_size = int(options.pop("predict_batch_size", 64))
    return enc, from_dict(FinetuneConfig, options), batch_size


OPENAI_PREFIX = "openai:"


def _icl_options(spec: MethodSpec, ctx: BuildContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options shared by every ICL backend, the ``openai`` sub-mapping for server-backed ones)."""
    options = dict(ctx.options)
    remote = options.pop("openai", None) or {}
    if not isinstance(remote, dict):
        raise ConfigError(f"method_options.{spec.kind}.openai must be a mapping, got {remote!r}")
    if "api_key" in remote:
        raise ConfigError(
            f"method_options.{spec.kind}.openai.api_key: configs are saved with the results, so they never hold "
            "keys; put the key in an environment variable (OPENAI_API_KEY, or the one named by api_key_env)"
        )
    template = options.pop("template", None) or TEMPLATE_BY_TASK.get(ctx.task)
    if template is None:
        raise ConfigError(f"no ICL prompt template for task {ctx.task!r}; set method_options.{spec.kind}.template")
    return {"template": template, "zero_shot": spec.kind == "icl0", **options}, remote


def _icl_config(spec: MethodSpec, ctx: BuildContext) -> Any:
    """``ICLConfig`` for ``icl[:<llm>]``, ``RemoteICLConfig`` for ``icl:openai:<model>``."""
    common, remote = _icl_options(spec, ctx)
    arg = spec.arg or DEFAULT_LLM
    if arg.startswith(OPENAI_PREFIX):
        from xmeta.icl.remote import RemoteICLConfig

        shared = {k: common.pop(k) for k in ("template", "zero_shot", "verbalizers", "normalize") if k in common}
        if common:  # in-process options (dtype, batch_size, ...) mean nothing to a server
            raise ConfigError(
                did_you_mean(sorted(common)[0], sorted(RemoteICLConfig.__dataclass_fields__), f"{spec.kind} option")
            )
        return from_dict(RemoteICLConfig, {"model": arg[len(OPENAI_PREFIX) :], **shared, **remote})
    from xmeta.icl import ICLConfig

    return from_dict(ICLConfig, {"model": arg, **common})


def _build_frozen_proto(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.meta import FrozenProtoLearner

    enc, options = _frozen_options(spec, ctx)
    return FrozenProtoLearner.from_config(enc, **options)


def _build_finetune(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.meta import FinetuneLearner
    from xmeta.models.encoder import Encoder

    enc, ft, batch_size = _finetune_options(spec, ctx)
    return FinetuneLearner(Encoder.from_config(enc), ft, batch_size=batch_size)


def _build_meta(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.meta import MetaLearner, load_meta_model

    model = load_meta_model(spec.arg or "default")
    return MetaLearner(model, **ctx.options)  # batch_size, inner_steps


def _build_icl(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.icl import ICLLearner
    from xmeta.icl.remote import RemoteICLConfig, RemoteICLLearner

    cfg = _icl_config(spec, ctx)
    return RemoteICLLearner(cfg) if isinstance(cfg, RemoteICLConfig) else ICLLearner.from_config(cfg)


def _build_external(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.icl import ExternalLearner

    return ExternalLearner(Path(spec.arg or ""), **ctx.options)


def _describe_meta(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    from xmeta.bench.metarun import read_meta_run

    unknown = set(ctx.options) - {"batch_size", "inner_steps"}
    if unknown:
        raise ConfigError(did_you_mean(sorted(unknown)[0], ["batch_size", "inner_steps"], "meta option"))
    run = read_meta_run(spec.arg or "default")
    details = {"algorithm": run.algorithm, "checkpoint": str(run.checkpoint), "training": run.training.summary()}
    return MethodInfo(spec.name, spec.kind, f"{spec.name} ({run.algorithm})", details, run.training)


def _describe_icl(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    cfg = _icl_config(spec, ctx)
    mode = "zero-shot" if cfg.zero_shot else "in-context"
    details = {"model": cfg.model, "template": cfg.template, "mode": mode}
    if hasattr(cfg, "scoring"):  # server-backed: how it scored (the URL may be private; the key is never here)
        details.update(backend="openai-compatible server", scoring=cfg.scoring)
    return MethodInfo(spec.name, spec.kind, spec.name, details)


def _logreg_options(spec: MethodSpec, ctx: BuildContext) -> tuple[Any, Any]:
    from xmeta.peers.logreg import LogRegConfig

    options = dict(ctx.options)
    enc = _encoder_config(BuildContext(ctx.task, spec.arg or ctx.encoder), options)
    return enc, from_dict(LogRegConfig, options)


def _build_logreg(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.peers.logreg import LogRegLearner

    enc, cfg = _logreg_options(spec, ctx)
    return LogRegLearner.from_config(enc, cfg)


def _describe_logreg(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    enc, cfg = _logreg_options(spec, ctx)
    return MethodInfo(spec.name, spec.kind, spec.name, {"encoder": enc.model, "C": cfg.C, "normalize": cfg.normalize})


def _setfit_config(spec: MethodSpec, ctx: BuildContext) -> tuple[str, Any]:
    from xmeta.peers.setfit_learner import SetFitConfig

    return spec.arg or ctx.encoder, from_dict(SetFitConfig, dict(ctx.options))


def _build_setfit(spec: MethodSpec, ctx: BuildContext) -> Learner:
    from xmeta.peers.setfit_learner import SetFitLearner

    model, cfg = _setfit_config(spec, ctx)
    return SetFitLearner(model, cfg)


def _describe_setfit(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    model, cfg = _setfit_config(spec, ctx)
    details = {"encoder": model, "batch_size": cfg.batch_size, "num_epochs": cfg.num_epochs}
    return MethodInfo(spec.name, spec.kind, spec.name, {**details, "body_learning_rate": cfg.body_learning_rate})


def _describe_external(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    path = Path(spec.arg or "")
    if not path.is_file():
        raise InputError(f"{spec.name}: predictions file not found: {path}")
    unknown = set(ctx.options) - {"name"}
    if unknown:
        raise ConfigError(did_you_mean(sorted(unknown)[0], ["name"], "external option"))
    return MethodInfo(spec.name, spec.kind, f"external:{path.name}", {"file": str(path)})


def _describe_frozen(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    enc, options = _frozen_options(spec, ctx)
    return MethodInfo(spec.name, spec.kind, spec.name, {"encoder": enc.model, **options})


def _describe_finetune(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    enc, ft, _ = _finetune_options(spec, ctx)
    return MethodInfo(spec.name, spec.kind, spec.name, {"encoder": enc.model, "lora_r": enc.lora_r, "steps": ft.steps})


register_method("frozen-proto", _build_frozen_proto, describe=_describe_frozen, help="prototypes of the frozen encoder")
register_method("finetune", _build_finetune, describe=_describe_finetune, help="LoRA fine-tuning on the support set")
register_method(
    "meta",
    _build_meta,
    arg_name="run dir",
    arg="required",
    describe=_describe_meta,
    help="meta-trained run: meta:<run dir> or meta:default",
)
register_method(
    "logreg",
    _build_logreg,
    arg_name="encoder",
    arg="optional",
    describe=_describe_logreg,
    help="logistic regression on frozen mean-pooled embeddings (MTEB's probe); logreg:<encoder> for another",
)
register_method(
    "setfit",
    _build_setfit,
    arg_name="encoder",
    arg="optional",
    describe=_describe_setfit,
    help="SetFit (the setfit library): contrastive fine-tuning + logistic head; setfit:<encoder> for another",
)
register_method(
    "icl",
    _build_icl,
    arg_name="llm",
    arg="optional",
    default_arg=DEFAULT_LLM,
    describe=_describe_icl,
    help=f"in-context LLM, the support set as demonstrations (default {DEFAULT_LLM}); "
    "icl:openai:<model> asks an OpenAI-compatible server ($OPENAI_BASE_URL, $OPENAI_API_KEY)",
)
register_method(
    "icl0",
    _build_icl,
    arg_name="llm",
    arg="optional",
    default_arg=DEFAULT_LLM,
    describe=_describe_icl,
    help="zero-shot LLM prompting (icl0:openai:<model> through a server)",
)
register_method(
    "external",
    _build_external,
    arg_name="file",
    arg="required",
    describe=_describe_external,
    help="predictions made elsewhere (JSONL/CSV uid,label); a query without one counts as wrong (coverage is reported)",
)
