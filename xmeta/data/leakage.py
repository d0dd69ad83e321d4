"""The leakage guard: no evaluation query may have been seen in meta-training, in any language.

SIB-200 is parallel: ``sib200:swh_Latn:test:12`` and ``sib200:eng_Latn:test:12`` are the same
sentence. Meta-training on the English one and evaluating on the Swahili one is a leak even though
their uids differ, so the check compares ``source_id`` (the shared sentence id) when the corpus has
one, and uids always.

Sources can be an :class:`~xmeta.data.episodes.EpisodeSampler` (everything it can draw / its
query pools), a ``datasets.Dataset`` (all rows), or episodes / examples.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from xmeta.errors import XmetaError
from xmeta.interfaces import Episode, Example

Role = Literal["train", "query"]
Record = tuple[str, "str | None"]  # (uid, source_id)


class LeakageError(XmetaError):
    """Evaluation queries (or their translations) that also appear in meta-training data."""


def records(source: Any, role: Role) -> list[tuple[str, str | None]]:
    """``(uid, source_id)`` pairs of ``source`` in a role.

    ``role="train"``: everything the source can contribute to training (a sampler's support and
    query pools, all dataset rows, all examples of episodes). ``role="query"``: what is scored at
    evaluation (a sampler's query pools, all dataset rows, the query sets of episodes).
    """
    if hasattr(source, "leakage_records"):  # EpisodeSampler (duck-typed: avoids an import cycle)
        return source.leakage_records(role)
    if hasattr(source, "column_names") and "uid" in source.column_names:  # datasets.Dataset
        arrow = source.with_format("arrow")
        uids = arrow["uid"].to_pylist()
        srcs = arrow["source_id"].to_pylist() if "source_id" in source.column_names else [None] * len(uids)
        return list(zip(uids, srcs))
    if isinstance(source, Episode):
        source = [source]
    out: list[tuple[str, str | None]] = []
    for item in source:
        if isinstance(item, Episode):
            examples: Iterable[Example] = item.query if role == "query" else item.support + item.query
        elif isinstance(item, Example):
            examples = [item]
        else:
            raise TypeError(f"cannot read examples from {type(item).__name__}")
        out.extend((ex.uid, ex.source_id) for ex in examples)
    return out


def find_leaks(train: Any, evaluation: Any) -> list[tuple[str, str]]:
    """``(evaluation uid, training uid)`` pairs that share a uid or a source sentence."""
    by_uid: dict[str, str] = {}
    by_source: dict[str, str] = {}
    for uid, source_id in records(train, "train"):
        by_uid.setdefault(uid, uid)
        if source_id is not None:
            by_source.setdefault(source_id, uid)
    leaks = []
    for uid, source_id in records(evaluation, "query"):
        seen = by_uid.get(uid) or (by_source.get(source_id) if source_id is not None else None)
        if seen is not None:
            leaks.append((uid, seen))
    return sorted(set(leaks))


def check_leakage(train: Any, evaluation: Any, max_listed: int = 5) -> None:
    """Raise if any evaluation query, or a translation of it, is in the meta-training data.

    Args:
        train: what meta-training draws from (sampler, dataset, episodes or examples).
        evaluation: what is evaluated (its queries: sampler query pools, dataset rows, episode queries).
        max_listed: how many leaking pairs to name in the message.

    Raises:
        LeakageError: listing the count and the first leaking pairs (evaluation uid <- training uid).
    """
    leaks = find_leaks(train, evaluation)
    if leaks:
        shown = "; ".join(f"{ev} (seen in training as {tr})" for ev, tr in leaks[:max_listed])
        more = f"; and {len(leaks) - max_listed} more" if len(leaks) > max_listed else ""
        raise LeakageError(
            f"{len(leaks)} evaluation queries were seen in meta-training (same uid or same source sentence "
            f"in another language): {shown}{more}. Meta-train on other splits, or pass exclude=<evaluation "
            "sampler> to the training EpisodeSampler."
        )
