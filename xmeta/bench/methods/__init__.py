"""Benchmark methods by name: ``frozen-proto``, ``finetune``, ``meta:<run>``, ``icl:<llm>``, ...

A method spec is ``kind`` or ``kind:arg``. :data:`METHODS` is the only list of kinds: configs,
``--methods``, ``method_options`` and ``xmeta bench --help`` all read it. Each kind owns

- its **option schema**: the names (and types, defaults) that ``method_options.<kind>`` may set,
  as a dataclass or a mapping ``name -> type`` (no default: absent unless given) or
  ``name -> default``; a callable returning either defers an expensive import until options are
  checked;
- ``describe(spec, ctx) -> MethodInfo``: cheap facts, no model loaded (display name, the data
  meta-training saw for the leakage check);
- ``build(spec, ctx) -> Learner``: loads the model.

Both functions get ``ctx.options`` already checked against the schema. Any learner that
implements the :class:`~xmeta.interfaces.Learner` protocol can be plugged in::

    register_method("knn", lambda spec, ctx: KnnLearner(ctx.encoder, **ctx.options), options={"k": 5})
    # then: xmeta bench --methods knn,frozen-proto method_options.knn.k=3

The built-in kinds live in one module per family (``encoders``, ``meta``, ``icl``, ``external``),
each next to the option parsing of the modules it wires in.
"""

from __future__ import annotations

# The built-in kinds register themselves on import.
from xmeta.bench.methods import encoders, external, icl, meta  # noqa: E402, F401
from xmeta.bench.methods.base import (
    METHODS,
    ArgRule,
    Build,
    BuildContext,
    Describe,
    MethodInfo,
    MethodKind,
    MethodSpec,
    OptionSchema,
    build_learner,
    describe_method,
    fields_of,
    methods_help,
    parse_method,
    parse_method_options,
    register_method,
)
from xmeta.bench.methods.icl import DEFAULT_LLM, OPENAI_PREFIX, TEMPLATE_BY_TASK  # noqa: E402

__all__ = [
    "DEFAULT_LLM",
    "METHODS",
    "OPENAI_PREFIX",
    "TEMPLATE_BY_TASK",
    "ArgRule",
    "Build",
    "BuildContext",
    "Describe",
    "MethodInfo",
    "MethodKind",
    "MethodSpec",
    "OptionSchema",
    "build_learner",
    "describe_method",
    "fields_of",
    "methods_help",
    "parse_method",
    "parse_method_options",
    "register_method",
]
