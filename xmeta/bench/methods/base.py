"""The method registry's core: specs, kinds with their option schemas, ``register_method`` and the help text.

See :mod:`xmeta.bench.methods` for the contract; the built-in kinds import this module, never the package.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import textwrap
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from xmeta.config import ConfigError, from_dict
from xmeta.interfaces import Learner
from xmeta.registry import Registry, UnknownNameError, did_you_mean

ArgRule = Literal["none", "optional", "required"]
# A dataclass, a mapping name -> type or default, or a callable returning one of them (lazy import).
OptionSchema = type | Mapping[str, Any] | Callable[[], Any]


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
        options: ``method_options[kind]`` from the config; a kind's describe and build functions
            get it checked against the kind's schema, with the schema's defaults filled in.
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
_UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>"})()  # an option nobody gave


def _is_type(entry: Any) -> bool:
    """Whether a mapping schema entry is a type (``int``, ``str | None``, ``Literal[...]``) rather than a default."""
    return isinstance(entry, type) or entry is Any or typing.get_origin(entry) is not None


def _schema_class(schema: OptionSchema) -> type:
    """The schema as a dataclass: a callable is resolved, a mapping becomes one."""
    if callable(schema) and not isinstance(schema, type):
        schema = schema()
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        return schema
    if not isinstance(schema, Mapping):
        raise TypeError(f"an option schema is a dataclass or a mapping name -> type/default, got {schema!r}")
    fields = []
    for name, entry in schema.items():
        if _is_type(entry):
            fields.append((name, entry, field(default=_UNSET)))
        else:  # a default: its type is the option's; a fresh copy per parse, as mutable defaults must be
            tp = Any if entry is None else type(entry)
            fields.append((name, tp, field(default_factory=functools.partial(copy.deepcopy, entry))))
    return dataclasses.make_dataclass("MethodOptions", fields)


@dataclass(frozen=True)
class MethodKind:
    """A registered kind of method: its argument rule, option schema, describe and build functions."""

    name: str
    build: Build
    describe: Describe
    arg: ArgRule = "none"
    default_arg: str | None = None
    help: str = ""
    arg_name: str = "arg"
    options: OptionSchema | None = None

    @property
    def form(self) -> str:
        """How a spec of this kind is written, e.g. ``meta:<run dir>`` or ``icl[:<llm>]``."""
        return {"none": self.name, "optional": f"{self.name}[:<{self.arg_name}>]"}.get(
            self.arg, f"{self.name}:<{self.arg_name}>"
        )

    def parse_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """``options`` checked against the schema: converted values plus the schema's defaults.

        Raises:
            ConfigError: An option the kind does not have (with the close names) or a bad value.
        """
        options = dict(options or {})
        if self.options is None:
            if options:
                raise ConfigError(f"method {self.name!r} takes no options, got method_options.{self.name}: {options}")
            return {}
        cls = _schema_class(self.options)
        fields = dataclasses.fields(cls)
        names = [f.name for f in fields]
        for key in options:
            if key not in names:
                raise ConfigError(did_you_mean(key, names, f"{self.name} option"))
        for f in fields:  # a dataclass field without a default is an option the config must set
            if f.name not in options and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"method {self.name!r} needs method_options.{self.name}.{f.name}")
        parsed = from_dict(cls, options, prefix=f"method_options.{self.name}.")
        return {name: value for name in names if (value := getattr(parsed, name)) is not _UNSET}

    def bind(self, ctx: BuildContext) -> BuildContext:
        """``ctx`` with its options checked against the schema (what describe and build get)."""
        return dataclasses.replace(ctx, options=self.parse_options(ctx.options))


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
    options: OptionSchema | None = None,
    help: str = "",
    arg_name: str = "arg",
    overwrite: bool = False,
) -> MethodKind:
    """Register a method kind so configs, ``--methods`` and ``--help`` know it.

    Args:
        name: The kind (the part of a spec before ``:``); must not contain ``:``.
        build: ``(spec, ctx) -> Learner``; called once per run, before the method's first cell.
        arg: Whether ``kind:arg`` takes no, an optional or a required argument.
        default_arg: The argument when ``arg="optional"`` and none is given.
        describe: ``(spec, ctx) -> MethodInfo`` without loading a model (default: the spec).
        options: What ``method_options.<name>`` may set: a dataclass, a mapping ``name -> type``
            (absent unless given) or ``name -> default``, or a callable returning one of them (an
            expensive import deferred). ``None``: the kind takes no options.
        help: One line for ``xmeta bench --help``.
        arg_name: What the argument is, for ``--help`` (``meta:<run dir>``).
        overwrite: Replace an existing kind of that name (tests, notebooks).

    Returns:
        The registered kind.
    """
    if ":" in name:
        raise ValueError(f"method kind {name!r} must not contain ':'")
    if options is not None and not callable(options) and not isinstance(options, Mapping):
        raise TypeError(f"options of method {name!r}: a dataclass, a mapping or a callable, got {options!r}")
    kind = MethodKind(name, build, describe or _describe_plain, arg, default_arg, help, arg_name, options)
    METHODS.add(name, kind, overwrite=overwrite)
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


def parse_method_options(method_options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Check a config's ``method_options``: every key a registered kind, every option one of its own.

    Raises:
        ConfigError: An unknown kind, a value that is not a mapping, an unknown option or a bad value.
    """
    out = {}
    for name, options in method_options.items():
        try:
            kind = METHODS.get(name)
        except UnknownNameError as err:
            raise ConfigError(f"method_options names an unknown method kind: {err}") from None
        if not isinstance(options, Mapping):
            raise ConfigError(f"method_options.{name} must be a mapping, got {options!r}")
        out[name] = kind.parse_options(options)
    return out


def describe_method(spec: MethodSpec, ctx: BuildContext) -> MethodInfo:
    """Cheap facts about a method (raises InputError for a missing run dir or file)."""
    kind = METHODS.get(spec.kind)
    return kind.describe(spec, kind.bind(ctx))


def build_learner(spec: MethodSpec, ctx: BuildContext) -> Learner:
    """Load the method's learner (the expensive step, done once per method and run)."""
    kind = METHODS.get(spec.kind)
    return kind.build(spec, kind.bind(ctx))


def methods_help(width: int = 100) -> str:
    """One entry per registered kind (the ``xmeta bench --help`` epilog is written from it)."""
    kinds = [METHODS.get(name) for name in METHODS]
    column = max([18, *(len(kind.form) for kind in kinds)])  # a long registered name shifts the column
    lines = []
    for kind in kinds:
        text = kind.help or "(no description)"  # wrap("") gives no line at all, which would hide the method
        indent = f"  {kind.form:<{column}} "
        lines += textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=" " * len(indent))
    return "\n".join(lines)


def fields_of(cls: type, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dataclass's fields as a mapping schema ``name -> type``: options passed on to it unset unless given."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in exclude}
