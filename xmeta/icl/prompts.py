"""Prompt templates as data: an instruction naming the labels, demonstrations, the query, the answer.

A rendered prompt is ``instruction + sep + (query(d) + answer(d) + sep for each demonstration d)``
followed by ``query(x)``; each label is scored as the continuation ``answer(label)``. Demonstrations
are built from the same ``query``/``answer`` strings as the scored query, so the model sees the
query in exactly the format it saw the demonstrations in.

Templates live as YAML files in ``xmeta/icl/templates/`` and are registered by their ``name``;
``get_template`` also accepts a path to a YAML file of the same shape.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xmeta.errors import InputError
from xmeta.registry import Registry

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).with_name("templates")

# Placeholders each template string may use; anything else is a typo we want to report.
_ALLOWED_FIELDS = {
    "instruction": {"labels"},
    "query": {"text"},
    "answer": {"label"},
    "separator": set(),
    "label_separator": set(),
}
_REQUIRED_FIELDS = {"query": {"text"}, "answer": {"label"}}


def _fields_of(fmt: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(fmt) if name is not None}


def clean_text(text: str) -> str:
    """Collapse whitespace (newlines included) so one example never spans several template lines."""
    return " ".join(text.split())


@dataclass(frozen=True)
class PromptTemplate:
    """How a classification prompt is written.

    Attributes:
        name: Registry name.
        instruction: Opening line; ``{labels}`` is replaced by the verbalizers joined by
            ``label_separator``. May be empty.
        query: One example without its answer; must contain ``{text}``.
        answer: The scored continuation; must contain ``{label}``. Put the space before the label
            here (``" {label}"``), not at the end of ``query``: tokenizers attach a leading space to
            the following word, so this keeps the label's tokens the same in every context.
        separator: Between the instruction and each demonstration block.
        label_separator: Between label verbalizers inside the instruction.
        verbalizers: Label name -> word the model scores; unmapped labels use their name.
        description: Free text for listings.
    """

    name: str
    instruction: str
    query: str
    answer: str = " {label}"
    separator: str = "\n\n"
    label_separator: str = ", "
    verbalizers: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        for attr, allowed in _ALLOWED_FIELDS.items():
            try:
                used = _fields_of(getattr(self, attr))
            except ValueError as err:
                raise ValueError(f"template {self.name!r}: {attr}: {err} (write literal braces as {{{{ }}}})") from None
            if used - allowed:
                raise ValueError(
                    f"template {self.name!r}: {attr} uses unknown placeholder(s) "
                    f"{sorted(used - allowed)}; allowed: {sorted(allowed) or 'none'}"
                )
            missing = _REQUIRED_FIELDS.get(attr, set()) - used
            if missing:
                raise ValueError(f"template {self.name!r}: {attr} must contain {{{next(iter(missing))}}}")
        for label, word in self.verbalizers.items():
            if not str(word).strip():
                raise ValueError(f"template {self.name!r}: empty verbalizer for label {label!r}")

    def with_verbalizers(self, verbalizers: Mapping[str, str] | None) -> PromptTemplate:
        """A copy whose verbalizers are updated by ``verbalizers`` (label name -> word)."""
        if not verbalizers:
            return self
        merged = {**self.verbalizers, **verbalizers}
        return PromptTemplate(
            name=self.name,
            instruction=self.instruction,
            query=self.query,
            answer=self.answer,
            separator=self.separator,
            label_separator=self.label_separator,
            verbalizers=merged,
            description=self.description,
        )

    def verbalize(self, label_name: str) -> str:
        """The word scored for ``label_name``."""
        return self.verbalizers.get(label_name, label_name)

    def render_instruction(self, label_names: Sequence[str]) -> str:
        """The instruction naming every label (in episode label order)."""
        labels = self.label_separator.join(self.verbalize(n) for n in label_names)
        return self.instruction.format(labels=labels)

    def render_query(self, text: str) -> str:
        """The query block for ``text``, ending right before the answer."""
        return self.query.format(text=clean_text(text))

    def render_answer(self, label_name: str) -> str:
        """The continuation scored for ``label_name`` (e.g. ``" sports"``)."""
        return self.answer.format(label=self.verbalize(label_name))

    def render_demonstration(self, text: str, label_name: str) -> str:
        """One solved example, separator included."""
        return self.render_query(text) + self.render_answer(label_name) + self.separator

    def render_prefix(self, label_names: Sequence[str], demonstrations: Sequence[tuple[str, str]]) -> str:
        """Everything before the query: instruction then ``(text, label_name)`` demonstrations.

        Args:
            label_names: Episode labels in label-id order (named by the instruction).
            demonstrations: ``(text, label_name)`` pairs in prompt order; empty for zero-shot.

        Returns:
            The shared prompt prefix; the query block follows it directly.
        """
        instruction = self.render_instruction(label_names)
        head = instruction + self.separator if instruction else ""
        return head + "".join(self.render_demonstration(t, y) for t, y in demonstrations)

    def render(self, label_names: Sequence[str], demonstrations: Sequence[tuple[str, str]], text: str) -> str:
        """The full prompt for ``text`` without an answer (for display and golden tests)."""
        return self.render_prefix(label_names, demonstrations) + self.render_query(text)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as in the YAML files."""
        return {
            "name": self.name,
            "description": self.description,
            "instruction": self.instruction,
            "query": self.query,
            "answer": self.answer,
            "separator": self.separator,
            "label_separator": self.label_separator,
            "verbalizers": dict(self.verbalizers),
        }


TEMPLATES: Registry[PromptTemplate] = Registry("prompt template")


class _StringLoader(yaml.SafeLoader):
    """YAML loader whose plain scalars stay strings: verbalizers like ``yes``/``no``/``1`` are
    words to score, not YAML 1.1 booleans or numbers."""


_StringLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag.endswith((":null", ":str"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_template(path: str | Path) -> PromptTemplate:
    """Read a template YAML file; errors name the file and the offending key.

    Raises:
        InputError: The file is missing, not YAML, not a mapping, has unknown keys or bad values.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompt template file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StringLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise InputError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise InputError(f"{path}: a prompt template must be a mapping")
    known = {f for f in PromptTemplate.__dataclass_fields__}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{path}: unknown template key(s) {unknown}; known: {sorted(known)}")
    data = {k: ("" if v is None else v) for k, v in data.items()}
    data.setdefault("name", path.stem)
    data["verbalizers"] = {str(k): str(v) for k, v in (data.get("verbalizers") or {}).items()}
    try:
        return PromptTemplate(**data)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: {err}") from None


def register_template(template: PromptTemplate) -> PromptTemplate:
    """Register ``template`` under its name (a clash raises ``ValueError``)."""
    TEMPLATES.add(template.name, template)
    return template


def get_template(name_or_path: str | Path | PromptTemplate) -> PromptTemplate:
    """A registered template by name, a template YAML file by path, or ``name_or_path`` itself.

    Raises:
        UnknownNameError: An unknown name (with did-you-mean suggestions).
        InputError: A bad template file.
    """
    if isinstance(name_or_path, PromptTemplate):
        return name_or_path
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return load_template(text)
    return TEMPLATES.get(text)


def _register_builtins() -> None:
    for path in sorted(TEMPLATE_DIR.glob("*.yaml")):
        register_template(load_template(path))


_register_builtins()
