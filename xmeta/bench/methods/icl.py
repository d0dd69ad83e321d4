"""``icl[:<llm>]`` and ``icl0[:<llm>]``: an LLM prompted with the episode's support set (or none).

``icl:<llm>`` runs the model in process (``xmeta.icl.ICLConfig``); ``icl:openai:<model>`` asks an
OpenAI-compatible server (``xmeta.icl.remote.RemoteICLConfig``, its options under
``method_options.icl.openai``). The two kinds differ only in ``zero_shot``, which each kind's
functions pass on.
"""

from __future__ import annotations

import functools
from typing import Any

from xmeta.bench.methods.base import BuildContext, MethodInfo, MethodSpec, fields_of, register_method
from xmeta.config import ConfigError, from_dict
from xmeta.interfaces import Learner
from xmeta.registry import did_you_mean

DEFAULT_LLM = "gemma-3-270m"
OPENAI_PREFIX = "openai:"
# Prompt template of the ICL baseline per corpus; other tasks set method_options.icl.template.
TEMPLATE_BY_TASK = {"sib200": "topic", "afrisenti": "sentiment"}
# Options that mean the same in process and on a server (the rest of a server's go under ``openai``).
_SHARED = ("template", "verbalizers", "normalize")


def _icl_schema() -> dict[str, Any]:
    from xmeta.icl import ICLConfig

    # model is the spec's argument and zero_shot the kind's; openai holds RemoteICLConfig's fields.
    return {"openai": dict, **fields_of(ICLConfig, exclude=("model", "zero_shot"))}


def _icl_config(spec: MethodSpec, ctx: BuildContext, *, zero_shot: bool) -> Any:
    """``ICLConfig`` for ``icl[:<llm>]``, ``RemoteICLConfig`` for ``icl:openai:<model>``."""
    where = f"method_options.{spec.kind}"
    options = dict(ctx.options)
    remote = options.pop("openai", {})
    if "api_key" in remote:
        raise ConfigError(
            f"{where}.openai.api_key: configs are saved with the results, so they never hold keys; put the key in "
            "an environment variable (OPENAI_API_KEY, or the one named by api_key_env)"
        )
    options["template"] = options.get("template") or TEMPLATE_BY_TASK.get(ctx.task)
    if options["template"] is None:
        raise ConfigError(f"no ICL prompt template for task {ctx.task!r}; set {where}.template")
    arg = spec.arg or DEFAULT_LLM
    if arg.startswith(OPENAI_PREFIX):
        from xmeta.icl.remote import RemoteICLConfig

        local = sorted(set(options) - set(_SHARED))
        if local:  # in-process options (dtype, batch_size, ...) mean nothing to a server
            known = sorted(RemoteICLConfig.__dataclass_fields__)
            raise ConfigError(did_you_mean(local[0], known, f"{spec.kind}:openai option"))
        shared = {"model": arg[len(OPENAI_PREFIX) :], "zero_shot": zero_shot, **options}
        return from_dict(RemoteICLConfig, {**shared, **remote}, prefix=f"{where}.openai.")
    from xmeta.icl import ICLConfig

    return from_dict(ICLConfig, {"model": arg, "zero_shot": zero_shot, **options}, prefix=f"{where}.")


def _build_icl(spec: MethodSpec, ctx: BuildContext, *, zero_shot: bool) -> Learner:
    from xmeta.icl import ICLLearner
    from xmeta.icl.remote import RemoteICLConfig, RemoteICLLearner

    cfg = _icl_config(spec, ctx, zero_shot=zero_shot)
    return RemoteICLLearner(cfg) if isinstance(cfg, RemoteICLConfig) else ICLLearner.from_config(cfg)


def _describe_icl(spec: MethodSpec, ctx: BuildContext, *, zero_shot: bool) -> MethodInfo:
    cfg = _icl_config(spec, ctx, zero_shot=zero_shot)
    mode = "zero-shot" if cfg.zero_shot else "in-context"
    details = {"model": cfg.model, "template": cfg.template, "mode": mode}
    if hasattr(cfg, "scoring"):  # server-backed: how it scored (the URL may be private; the key is never here)
        details.update(backend="openai-compatible server", scoring=cfg.scoring)
    return MethodInfo(spec.name, spec.kind, spec.name, details)


_HELP = {
    False: f"in-context LLM, the support set as demonstrations (default {DEFAULT_LLM}); "
    "icl:openai:<model> asks an OpenAI-compatible server ($OPENAI_BASE_URL, $OPENAI_API_KEY)",
    True: "zero-shot LLM prompting (icl0:openai:<model> through a server)",
}
for _name, _zero_shot in (("icl", False), ("icl0", True)):  # one family: the kind decides zero_shot
    register_method(
        _name,
        functools.partial(_build_icl, zero_shot=_zero_shot),
        arg="optional",
        arg_name="llm",
        default_arg=DEFAULT_LLM,
        describe=functools.partial(_describe_icl, zero_shot=_zero_shot),
        options=_icl_schema,
        help=_HELP[_zero_shot],
    )
