"""The support set of ``xmeta adapt``: read, validate and summarise a user's labelled examples.

Rules (the same for files and Python lists; each problem is one ``InputError`` line naming the
file/line, or the list position, and the value):

- empty or whitespace-only texts are **dropped**, counted in a warning and in the model card: a
  spreadsheet export often ends in blank cells, and an empty text carries no class evidence;
- an empty label is an error (a row that says nothing about its class is almost always a mistake);
- exact duplicates (same stripped text and label) are **dropped and reported** with their lines;
  the same text under two different labels is an error (the support would contradict itself);
- fewer than two classes in total, or a label declared in ``labels`` with no example left, is an
  error; a label outside the declared ``labels`` is an error with a did-you-mean hint;
- more than ``max_per_class`` examples of a class are **subsampled deterministically** (seeded,
  file order kept) with a warning: adaptation cost grows with the support size, and a meta-learned
  model gains little from hundreds of shots per class.

Label ids follow the sorted label names (or the order of ``labels`` when given), so the same
examples always give the same ids whatever order the rows come in.
"""

from __future__ import annotations

import logging
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmeta.data.readers import Format, close_hint, read_rows
from xmeta.errors import InputError
from xmeta.interfaces import Example

logger = logging.getLogger(__name__)

DEFAULT_MAX_PER_CLASS = 64

SupportInput = str | Path | Iterable[tuple[str, str]] | Iterable[Example]


@dataclass(frozen=True)
class RawExample:
    """One labelled text before validation; ``where`` names its origin (``file:line`` or ``support[i]``)."""

    text: str
    label: str
    where: str


@dataclass
class SupportSet:
    """A validated support set ready for adaptation.

    Attributes:
        examples: one ``Example`` per kept row, labels ``0..N-1`` following ``label_names``.
        label_names: class names by label id.
        lang: FLORES-style language code (``und`` when not given).
        source: where the examples came from (a path, or ``"python"``).
        stats: counts and text lengths for the model card (see ``support_stats``).
    """

    examples: list[Example]
    label_names: tuple[str, ...]
    lang: str = "und"
    source: str = "python"
    stats: dict[str, Any] = field(default_factory=dict)


def read_support_file(
    path: str | Path, *, text_column: str = "text", label_column: str = "label", fmt: Format | None = None
) -> list[RawExample]:
    """Rows of a TSV/CSV/JSONL support file (with a header) as ``RawExample`` objects.

    Raises:
        InputError: missing file, undecodable bytes, missing columns, malformed rows (from ``read_rows``).
    """
    path = Path(path)
    if text_column == label_column:
        raise InputError(f"--text-column and --label-column are both {text_column!r}; they must differ")
    rows = read_rows(path, [text_column, label_column], fmt)
    return [RawExample(r.values[0], r.values[1], f"{path}:{r.line}") for r in rows]


def raw_from_python(support: Sequence[Any]) -> list[RawExample]:
    """``(text, label)`` pairs or ``Example`` objects (their ``label_name``) as ``RawExample`` objects.

    Raises:
        InputError: an item that is neither, or a text/label that is not a string (labels may be ints).
    """
    out = []
    for i, item in enumerate(support):
        where = f"support[{i}]"
        if isinstance(item, Example):
            text, label = item.text, item.label_name
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            text, label = item
        else:
            raise InputError(f"{where}: expected a (text, label) pair or an Example, got {item!r:.80}")
        if not isinstance(text, str):
            raise InputError(f"{where}: text must be a string, got {type(text).__name__}: {text!r:.60}")
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise InputError(f"{where}: label must be a string (or int), got {type(label).__name__}: {label!r:.60}")
        out.append(RawExample(text, str(label), where))
    return out


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def _drop_empty_and_duplicates(raw: Sequence[RawExample], source: str) -> tuple[list[RawExample], int, list[str]]:
    kept: list[RawExample] = []
    seen: dict[str, RawExample] = {}
    empty, dups = 0, []
    for ex in raw:
        label = ex.label.strip()
        if not label:
            raise InputError(f"{ex.where}: empty label for text {_short(ex.text)}")
        text = ex.text.strip()
        if not text:
            empty += 1
            continue
        first = seen.get(text)
        if first is not None:
            if first.label.strip() != label:
                raise InputError(
                    f"{ex.where}: text {_short(text)} is labelled {label!r} here but {first.label.strip()!r} "
                    f"at {first.where}; a text must have one label"
                )
            dups.append(ex.where)
            continue
        seen[text] = ex
        kept.append(RawExample(text, label, ex.where))
    if empty:
        logger.warning("%s: dropped %d empty or whitespace-only text(s)", source, empty)
    if dups:
        shown = ", ".join(dups[:5]) + (f" and {len(dups) - 5} more" if len(dups) > 5 else "")
        logger.warning("%s: dropped %d duplicate row(s) (same text and label as an earlier row): %s", source,
                       len(dups), shown)  # fmt: skip
    return kept, empty, dups


def _label_order(kept: Sequence[RawExample], labels: Sequence[str] | None, source: str, empty: int) -> tuple[str, ...]:
    present = {ex.label for ex in kept}
    if labels is None:
        names = tuple(sorted(present))
    else:
        names = tuple(dict.fromkeys(lab.strip() for lab in labels if lab.strip()))
        for ex in kept:
            if ex.label not in names:
                hint = close_hint(ex.label, names)
                raise InputError(f"{ex.where}: label {ex.label!r} is not one of {', '.join(names)}.{hint}")
        missing = [lab for lab in names if lab not in present]
        if missing:
            after = f" (after dropping {empty} empty text(s))" if empty else ""
            raise InputError(f"{source}: label(s) {', '.join(map(repr, missing))} have no example{after}")
    if len(names) < 2:
        found = f"only the label {names[0]!r}" if names else "no labelled example"
        after = f" after dropping {empty} empty text(s)" if empty else ""
        raise InputError(f"{source}: found {found}{after}; adaptation needs at least 2 classes")
    return names


def _subsample(kept: list[RawExample], max_per_class: int | None, seed: int, source: str) -> tuple[list, dict]:
    if max_per_class is None:
        return kept, {}
    if max_per_class < 1:
        raise InputError(f"max_per_class must be >= 1, got {max_per_class}")
    by_label: dict[str, list[int]] = {}
    for i, ex in enumerate(kept):
        by_label.setdefault(ex.label, []).append(i)
    rng = random.Random(seed)
    drop: set[int] = set()
    dropped: dict[str, int] = {}
    for label in sorted(by_label):  # sorted: the RNG stream must not depend on row order
        # Candidates in text order: the kept subset depends on the examples and the seed, not on
        # how the rows happen to be ordered in the file.
        idx = sorted(by_label[label], key=lambda i: kept[i].text)
        if len(idx) > max_per_class:
            keep = set(rng.sample(idx, max_per_class))
            drop.update(i for i in idx if i not in keep)
            dropped[label] = len(idx) - max_per_class
    if dropped:
        logger.warning(
            "%s: more than %d examples for %d label(s); kept a seeded random %d of each (seed %d), dropped %s",
            source, max_per_class, len(dropped), max_per_class, seed, dict(dropped),
        )  # fmt: skip
    return [ex for i, ex in enumerate(kept) if i not in drop], dropped


def support_stats(examples: Sequence[Example], label_names: Sequence[str]) -> dict[str, Any]:
    """Examples per class and text lengths (characters, whitespace words) of a support set."""
    counts = Counter(ex.label_name for ex in examples)
    chars = [len(ex.text) for ex in examples]
    words = [len(ex.text.split()) for ex in examples]
    return {
        "examples": len(examples),
        "per_class": {name: counts.get(name, 0) for name in label_names},
        "chars": {"min": min(chars), "median": statistics.median(chars), "max": max(chars)},
        "words": {"min": min(words), "median": statistics.median(words), "max": max(words)},
    }


def build_support(
    raw: Sequence[RawExample],
    *,
    source: str = "python",
    lang: str | None = None,
    labels: Sequence[str] | None = None,
    max_per_class: int | None = DEFAULT_MAX_PER_CLASS,
    seed: int = 0,
) -> SupportSet:
    """Validate ``raw`` examples into a ``SupportSet`` (rules in the module docstring).

    Args:
        raw: labelled texts with their origin.
        source: the file (or ``"python"``) for messages and the model card.
        lang: language code of the texts; ``None`` records ``und``.
        labels: the expected label set (and id order); ``None`` takes the sorted labels found.
        max_per_class: most examples kept per class (``None``: no cap).
        seed: seed of the subsampling.

    Raises:
        InputError: empty labels, conflicting duplicates, unknown or example-less labels, < 2 classes.
    """
    lang = (lang or "und").strip()
    if not lang or any(c.isspace() for c in lang):
        raise InputError(f"language code must be a non-empty word such as swh_Latn, got {lang!r}")
    if not raw:
        raise InputError(f"{source}: no examples; the support set needs labelled texts of at least 2 classes")
    kept, empty, dups = _drop_empty_and_duplicates(raw, source)
    names = _label_order(kept, labels, source, empty)
    kept, subsampled = _subsample(kept, max_per_class, seed, source)
    ids = {name: i for i, name in enumerate(names)}
    examples = [Example(f"support:{i}", ex.text, ids[ex.label], ex.label, lang) for i, ex in enumerate(kept)]
    counts = Counter(ex.label for ex in examples)
    if len(set(counts.values())) > 1:
        logger.info("%s: classes are not balanced: %s", source, {names[k]: v for k, v in sorted(counts.items())})
    stats = support_stats(examples, names)
    stats.update(
        rows=len(raw),
        dropped_empty=empty,
        dropped_duplicates=len(dups),
        subsampled=subsampled,
        max_per_class=max_per_class,
        seed=seed,
    )
    return SupportSet(examples, names, lang, source, stats)


def load_support(
    support: SupportInput,
    *,
    text_column: str = "text",
    label_column: str = "label",
    lang: str | None = None,
    labels: Sequence[str] | None = None,
    max_per_class: int | None = DEFAULT_MAX_PER_CLASS,
    seed: int = 0,
) -> SupportSet:
    """A ``SupportSet`` from a file path, ``(text, label)`` pairs or ``Example`` objects.

    Raises:
        InputError: see ``read_support_file`` and ``build_support``.
    """
    if isinstance(support, (str, Path)):
        raw = read_support_file(support, text_column=text_column, label_column=label_column)
        source = str(support)
    elif isinstance(support, Iterable):
        raw, source = raw_from_python(list(support)), "python"
    else:
        raise InputError(f"support must be a file path or a list of (text, label) pairs, got {type(support).__name__}")
    return build_support(raw, source=source, lang=lang, labels=labels, max_per_class=max_per_class, seed=seed)
