"""Episodes as uids: save them with results, rebuild them later from the corpus.

An episode is stored as ``{index, lang, query_lang, seed, label_names, support: [uid], query: [uid]}``
(texts are not copied: the corpus is the source of truth). Rebuilding looks every uid up in a
dataset or sampler and gives each example the label of its ``label_name`` in ``label_names``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xmeta.data.schema import SOURCE_ID, column_values, label_names_of
from xmeta.errors import InputError, writing
from xmeta.interfaces import Episode, Example


def episode_to_dict(episode: Episode) -> dict[str, Any]:
    """The JSON-ready uid form of an episode."""
    return {
        "index": episode.index,
        "lang": episode.lang,
        "query_lang": episode.query_lang,
        "seed": episode.seed,
        "label_names": list(episode.label_names),
        **episode.uids(),
    }


class _DatasetLookup:
    """uid -> (text, label_name, lang, source_id) over a whole dataset (built once)."""

    def __init__(self, dataset: Any) -> None:
        names = label_names_of(dataset)
        uids = column_values(dataset, "uid")
        texts, labels, langs = (column_values(dataset, c) for c in ("text", "label", "lang"))
        sources = column_values(dataset, SOURCE_ID) if SOURCE_ID in dataset.column_names else [None] * len(uids)
        self._rows = {u: (t, names[lab], lg, s) for u, t, lab, lg, s in zip(uids, texts, labels, langs, sources)}

    def example_by_uid(self, uid: str) -> tuple[str, str, str, str | None]:
        return self._rows[uid]


def _lookup(source: Any) -> Any:
    if hasattr(source, "example_by_uid"):
        return source
    if hasattr(source, "column_names"):
        return _DatasetLookup(source)
    raise TypeError(f"cannot look uids up in {type(source).__name__}; pass a Dataset or an EpisodeSampler")


def episode_from_dict(data: Mapping[str, Any], source: Any) -> Episode:
    """Rebuild an episode from :func:`episode_to_dict` output.

    Args:
        data: the stored episode.
        source: a ``datasets.Dataset`` or an :class:`~xmeta.data.episodes.EpisodeSampler` holding its uids.

    Raises:
        InputError: a uid missing from ``source``, or a label name not in the episode's ``label_names``.
    """
    return _rebuild(data, _lookup(source))


def _rebuild(data: Mapping[str, Any], lookup: Any) -> Episode:
    try:
        names = tuple(data["label_names"])
        index, lang = int(data["index"]), str(data["lang"])
        support_uids, query_uids = list(data["support"]), list(data["query"])
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"not a stored episode (missing or bad field: {err})") from None
    label_of = {name: i for i, name in enumerate(names)}

    def example(uid: str) -> Example:
        try:
            text, label_name, ex_lang, source_id = lookup.example_by_uid(uid)
        except KeyError:
            raise InputError(f"episode {index}: uid {uid!r} is not in the given corpus") from None
        if label_name not in label_of:
            raise InputError(f"episode {index}: uid {uid!r} has label {label_name!r}, not one of {list(names)}")
        return Example(uid, text, label_of[label_name], label_name, ex_lang, source_id)

    return Episode(
        index=index,
        lang=lang,
        query_lang=str(data.get("query_lang", lang)),
        label_names=names,
        support=tuple(example(u) for u in support_uids),
        query=tuple(example(u) for u in query_uids),
        seed=int(data.get("seed", 0)),
    )


def save_episodes(path: str | Path, episodes: Iterable[Episode]) -> None:
    """Write episodes as JSON lines (uids only), atomically.

    Raises:
        WriteError: The disk is full or the write was refused (no partial file is left).
    """
    with writing(path, atomic=True) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for ep in episodes:
            fh.write(json.dumps(episode_to_dict(ep), ensure_ascii=False) + "\n")


def load_episodes(path: str | Path, source: Any) -> list[Episode]:
    """Read episodes written by :func:`save_episodes` and rebuild them from ``source``.

    Raises:
        InputError: missing file, a line that is not JSON, or uids not in ``source`` (naming the line).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    lookup = _lookup(source)
    out = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(_rebuild(json.loads(line), lookup))
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
        except InputError as err:
            raise InputError(f"{path}:{line_no}: {err}") from None
    return out
