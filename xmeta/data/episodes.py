"""N-way K-shot Q-query episodes, fixed by (seed, episode index), per language or cross-lingual.

Determinism: episode ``i`` is drawn with its own RNG, seeded from a stable hash (blake2b, never
Python's salted ``hash()``) of ``(seed, lang, query_lang, i, n_way, k_shot, q_query, splits)``,
over pools sorted by uid. So episode ``i`` is the same whatever was drawn before, in whatever
order, in whichever process or rank, and whether the corpus came from local files or the hub.

Protocol defaults: evaluation draws support from ``dev`` and queries from ``test``; meta-training
(:meth:`EpisodeSampler.for_meta_training`) draws both from ``train``, disjointly. Within an
episode no uid, and in parallel corpora no source sentence, is in both support and query.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from xmeta.data.leakage import records
from xmeta.data.readers import close_hint
from xmeta.data.schema import SOURCE_ID, column_values, label_names_of, normalize_split, select_rows
from xmeta.errors import InputError
from xmeta.interfaces import Episode, Example

log = logging.getLogger(__name__)

SmallClassPolicy = Literal["error", "skip", "shrink"]


class InsufficientExamplesError(InputError):
    """A class without enough examples in a language/split for the requested shots and queries."""


def episode_rng(seed: int, *parts: object) -> np.random.Generator:
    """An RNG seeded by a stable hash of ``seed`` and ``parts`` (same in every process and Python run)."""
    payload = json.dumps(["xmeta-episode-v1", seed, *parts], default=str).encode("utf-8")
    digest = hashlib.blake2b(payload, digest_size=16).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


def _permutation(rng: np.random.Generator, n: int) -> np.ndarray:
    # argsort of uniform floats: relies only on the bit stream and float conversion, which NumPy
    # keeps stable, not on the implementation of Generator.permutation/choice.
    return np.argsort(rng.random(n), kind="stable")


def resolve_lang(code: str, present: Sequence[str], where: str) -> str:
    """``code`` if present; a bare ISO code (``hau``) maps to its only script variant (``hau_Latn``).

    Raises:
        InputError: naming the language and the closest present codes.
    """
    if code in present:
        return code
    variants = [p for p in present if p.split("_", 1)[0] == code]
    if len(variants) == 1:
        return variants[0]
    raise InputError(f"language {code!r} is not in {where} ({len(present)} languages).{close_hint(code, present)}")


def _stable_pick(options: Sequence[str], seed: int, *parts: object) -> str:
    return options[int(episode_rng(seed, "pick", *parts).integers(0, 2**62)) % len(options)]


class EpisodeSampler:
    """Draws :class:`~xmeta.interfaces.Episode` objects from a corpus in the standard schema.

    Args:
        dataset: a corpus from :func:`xmeta.data.load_task`.
        n_way: classes per episode (``None``: all of the corpus' classes). Drawn per episode when
            smaller than the label count, and remapped to episode labels ``0..N-1`` (names kept).
        n_way_min: with it, each episode's number of classes is drawn (a stable function of the
            seed and index) uniformly from ``n_way_min..n_way``: task diversity for meta-training.
        k_shot: support examples per class.
        q_query: query examples per class; ``None`` takes every remaining example of the chosen classes.
        langs: support languages (``None``: all in the dataset). With several, each episode's
            language is a stable function of ``(seed, index)`` unless passed to :meth:`episode`.
        query_langs: query languages for cross-lingual episodes (``None``: the support language).
        support_split: split of support examples (default ``dev``).
        query_split: split of query examples (default ``test``).
        seed: the episode seed.
        shuffle_labels: give the chosen classes a random order per episode (default: corpus label order,
            so with ``n_way`` = all classes episode labels equal corpus label ids).
        on_small_class: a class with too few examples raises (``"error"``), is never drawn
            (``"skip"``), or gets fewer shots/queries (``"shrink"``: ``min(k, available)`` support,
            the rest up to ``q`` as queries, at least one of each); skips and shrinks are logged.
        exclude: a sampler, dataset or episodes whose queries must never be drawn (by uid or source
            sentence); pass the evaluation sampler to a meta-training sampler. Dropped rows are logged.

    Raises:
        InputError: bad sizes, unknown language or split.
        InsufficientExamplesError: (when drawing) a class too small, naming language, split and class.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        n_way: int | None = None,
        n_way_min: int | None = None,
        k_shot: int = 5,
        q_query: int | None = 5,
        langs: str | Sequence[str] | None = None,
        query_langs: str | Sequence[str] | None = None,
        support_split: str = "dev",
        query_split: str = "test",
        seed: int = 0,
        shuffle_labels: bool = False,
        on_small_class: SmallClassPolicy = "error",
        exclude: Any = None,
    ) -> None:
        self.label_names = label_names_of(dataset)
        self.n_way = len(self.label_names) if n_way is None else n_way
        self.k_shot, self.q_query, self.seed = k_shot, q_query, seed
        if not 2 <= self.n_way <= len(self.label_names):
            raise InputError(f"n_way must be between 2 and {len(self.label_names)} (the corpus' classes), got {n_way}")
        if n_way_min is not None and not 2 <= n_way_min <= self.n_way:
            raise InputError(f"n_way_min must be between 2 and n_way={self.n_way}, got {n_way_min}")
        self.n_way_min = n_way_min
        if k_shot < 1 or (q_query is not None and q_query < 1):
            raise InputError(f"k_shot and q_query must be >= 1, got k_shot={k_shot}, q_query={q_query}")
        if on_small_class not in ("error", "skip", "shrink"):
            raise InputError(f"on_small_class must be 'error', 'skip' or 'shrink', got {on_small_class!r}")
        self.on_small_class = on_small_class
        self.shuffle_labels = shuffle_labels
        self.support_split, self.query_split = normalize_split(support_split), normalize_split(query_split)
        self.parallel = SOURCE_ID in dataset.column_names
        present = sorted(set(column_values(dataset, "lang")))
        self.langs = self._check_langs(langs, present) or present
        self.query_langs = self._check_langs(query_langs, present)
        needed = set(self.langs) | set(self.query_langs or ())
        rows = select_rows(dataset, needed, {self.support_split, self.query_split})
        self._load_rows(rows, exclude)
        self._plans: dict[tuple[str, str], list[tuple[int, int, int | None]]] = {}

    @classmethod
    def for_evaluation(cls, dataset: Any, **kwargs: Any) -> EpisodeSampler:
        """Support from ``dev``, queries from ``test`` (the default protocol)."""
        return cls(dataset, **{"support_split": "dev", "query_split": "test", **kwargs})

    @classmethod
    def for_meta_training(cls, dataset: Any, **kwargs: Any) -> EpisodeSampler:
        """Support and queries both from ``train``, disjoint within each episode."""
        return cls(dataset, **{"support_split": "train", "query_split": "train", **kwargs})

    @staticmethod
    def _check_langs(langs: str | Sequence[str] | None, present: Sequence[str]) -> list[str] | None:
        if langs is None:
            return None
        langs = [langs] if isinstance(langs, str) else list(langs)
        return sorted({resolve_lang(lang, present, "the dataset") for lang in langs})

    def _load_rows(self, rows: Any, exclude: Any) -> None:
        columns = {name: column_values(rows, name) for name in ("uid", "text", "label", "lang", "split")}
        uids = columns["uid"]
        order = sorted(range(len(uids)), key=uids.__getitem__)  # pools in uid order: row order never matters
        self._uid, self._text, self._label, self._lang, self._split = (
            [columns[name][i] for i in order] for name in ("uid", "text", "label", "lang", "split")
        )
        sources = column_values(rows, SOURCE_ID) if self.parallel else [None] * len(uids)
        self._source = [sources[i] for i in order]
        banned_uids: set[str] = set()
        banned_sources: set[str] = set()
        if exclude is not None:
            for uid, source_id in records(exclude, "query"):
                banned_uids.add(uid)
                if source_id is not None:
                    banned_sources.add(source_id)
        self.pools: dict[tuple[str, str], dict[int, list[int]]] = {}
        dropped = 0
        for i in range(len(self._uid)):
            if self._uid[i] in banned_uids or (self._source[i] is not None and self._source[i] in banned_sources):
                dropped += 1
                continue
            self.pools.setdefault((self._lang[i], self._split[i]), {}).setdefault(self._label[i], []).append(i)
        if dropped:
            log.warning("EpisodeSampler: excluded %d rows whose uid or source sentence is an excluded query", dropped)

    # ----------------------------------------------------------------------------------- planning

    def _plan(self, lang: str, query_lang: str) -> list[tuple[int, int, int | None]]:
        """Eligible classes with their (k, q) for a language pair, after the small-class policy."""
        key = (lang, query_lang)
        if key in self._plans:
            return self._plans[key]
        ss, qs, k, q = self.support_split, self.query_split, self.k_shot, self.q_query
        s_pools, q_pools = self.pools.get((lang, ss), {}), self.pools.get((query_lang, qs), {})
        for pool_lang, split, pools in ((lang, ss, s_pools), (query_lang, qs, q_pools)):
            if not pools:
                raise InsufficientExamplesError(f"language {pool_lang!r} has no examples in split {split!r}")
        # Support rows are removed from the query pool when both can hold the same uid / sentence.
        overlap = ss == qs and (lang == query_lang or self.parallel)
        plan, problems = [], []
        need_q = q if q is not None else 1
        for c, name in enumerate(self.label_names):
            n_s, n_q = len(s_pools.get(c, ())), len(q_pools.get(c, ()))
            if overlap and lang == query_lang:
                ok = n_s >= k + need_q
                detail = f"{lang}/{ss} has {n_s} examples, needs k_shot + q_query = {k + need_q}"
            elif overlap:
                ok = n_s >= k and n_q - k >= need_q
                detail = (
                    f"{lang}/{ss} has {n_s} examples (needs {k}) and {query_lang}/{qs} has {n_q} (needs {k + need_q}, "
                    "as queries must avoid the support's sentences)"
                )
            else:
                ok = n_s >= k and n_q >= need_q
                detail = f"{lang}/{ss} has {n_s} examples (needs {k}), {query_lang}/{qs} has {n_q} (needs {need_q})"
            if ok:
                plan.append((c, k, q))
                continue
            problems.append(f"class {name!r}: {detail}")
            if self.on_small_class == "shrink":
                k_c = min(k, n_s - 1 if overlap and lang == query_lang else n_s)
                q_avail = n_q - (k_c if overlap else 0)
                if k_c >= 1 and q_avail >= 1:
                    plan.append((c, k_c, min(q, q_avail) if q is not None else None))
        if problems:
            if self.on_small_class == "error":
                raise InsufficientExamplesError(
                    "; ".join(problems) + ". Lower k_shot/q_query, or pass on_small_class='skip' or 'shrink'."
                )
            log.warning("EpisodeSampler: %s; on_small_class=%r", "; ".join(problems), self.on_small_class)
        if len(plan) < self.n_way:
            raise InsufficientExamplesError(
                f"only {len(plan)} classes of {lang}/{ss} -> {query_lang}/{qs} have enough examples for "
                f"n_way={self.n_way}, k_shot={k}, q_query={q}"
            )
        self._plans[key] = plan
        return plan

    # ----------------------------------------------------------------------------------- drawing

    def episode(self, index: int, lang: str | None = None, query_lang: str | None = None) -> Episode:
        """Episode ``index`` (the same for the same sampler settings, always).

        Args:
            index: the episode number (any non-negative int; episodes are independent).
            lang: support language (default: the only one, or a stable pick among ``langs``).
            query_lang: query language (default: a stable pick among ``query_langs``, else ``lang``).
        """
        if index < 0:
            raise InputError(f"episode index must be >= 0, got {index}")
        known = sorted(set(self.langs) | set(self.query_langs or ()))
        if lang is None:
            lang = self.langs[0] if len(self.langs) == 1 else _stable_pick(self.langs, self.seed, "lang", index)
        lang = resolve_lang(lang, known, "this sampler's languages")
        if query_lang is None:
            query_lang = _stable_pick(self.query_langs, self.seed, "qlang", index, lang) if self.query_langs else lang
        query_lang = resolve_lang(query_lang, known, "this sampler's languages")
        plan = self._plan(lang, query_lang)
        n_way = self.n_way
        if self.n_way_min is not None:
            n_way = int(
                episode_rng(self.seed, "ways", lang, query_lang, index).integers(self.n_way_min, self.n_way + 1)
            )
        rng = episode_rng(
            self.seed,
            lang,
            query_lang,
            index,
            n_way,
            self.k_shot,
            self.q_query,
            self.support_split,
            self.query_split,
        )
        chosen = [plan[i] for i in sorted(_permutation(rng, len(plan))[:n_way])]
        if self.shuffle_labels:
            chosen = [chosen[i] for i in _permutation(rng, len(chosen))]
        s_pools = self.pools[(lang, self.support_split)]
        q_pools = self.pools[(query_lang, self.query_split)]
        support: list[tuple[int, int]] = []  # (row, episode label)
        query: list[tuple[int, int]] = []
        for label, (c, k_c, q_c) in enumerate(chosen):
            s_pool = s_pools[c]
            picked = [s_pool[i] for i in _permutation(rng, len(s_pool))[:k_c]]
            taken = set(picked)
            banned = {self._source[r] for r in picked} if self.parallel else set()
            candidates = [r for r in q_pools.get(c, ()) if r not in taken and self._source[r] not in banned]
            order = _permutation(rng, len(candidates))
            q_take = len(candidates) if q_c is None else q_c
            if len(candidates) < q_take:
                # Only reachable when different splits share source sentences (user corpora).
                if self.on_small_class != "shrink":
                    raise InsufficientExamplesError(
                        f"class {self.label_names[c]!r}: {len(candidates)} queries in {query_lang}/{self.query_split} "
                        f"left after removing the support's sentences, needs {q_take}"
                    )
                q_take = len(candidates)
            support.extend((r, label) for r in picked)
            query.extend((candidates[i], label) for i in order[:q_take])
        names = tuple(self.label_names[c] for c, _, _ in chosen)
        support = [support[i] for i in _permutation(rng, len(support))]
        query = [query[i] for i in _permutation(rng, len(query))]
        return Episode(
            index=index,
            lang=lang,
            query_lang=query_lang,
            label_names=names,
            support=tuple(self._example(r, label, names) for r, label in support),
            query=tuple(self._example(r, label, names) for r, label in query),
            seed=self.seed,
        )

    def _example(self, row: int, label: int, names: tuple[str, ...]) -> Example:
        return Example(self._uid[row], self._text[row], label, names[label], self._lang[row], self._source[row])

    def episodes(
        self, count: int, start: int = 0, lang: str | None = None, query_lang: str | None = None
    ) -> list[Episode]:
        """Episodes ``start .. start+count-1``."""
        return [self.episode(i, lang=lang, query_lang=query_lang) for i in range(start, start + count)]

    def pool_examples(self) -> list[Example]:
        """Every example an episode can draw (support and query pools), each once, in uid order.

        For work done once per example before any episode (e.g. ``prebuild_activation_cache``).
        ``label`` is the corpus' class id (in an episode it is renumbered to the episode's classes).
        """
        keys = {(lang, self.support_split) for lang in self.langs}
        keys |= {(lang, self.query_split) for lang in self.query_langs or self.langs}
        rows = sorted({r for key in keys for pool in self.pools.get(key, {}).values() for r in pool})
        return [self._example(r, self._label[r], self.label_names) for r in rows]

    # ----------------------------------------------------------------------------------- leakage / lookup

    def leakage_records(self, role: str) -> list[tuple[str, str | None]]:
        """``(uid, source_id)`` of every drawable row (``"train"``) or of the query pools (``"query"``)."""
        if role == "query":
            qlangs = set(self.query_langs or self.langs)
            keys = [key for key in self.pools if key[0] in qlangs and key[1] == self.query_split]
        else:
            keys = list(self.pools)
        return [(self._uid[r], self._source[r]) for key in keys for rows in self.pools[key].values() for r in rows]

    def example_by_uid(self, uid: str) -> tuple[str, str, str, str | None]:
        """``(text, label_name, lang, source_id)`` of a uid this sampler has loaded.

        Raises:
            KeyError: for a uid outside this sampler's languages and splits.
        """
        if not hasattr(self, "_uid_index"):
            self._uid_index = {u: i for i, u in enumerate(self._uid)}
        i = self._uid_index[uid]
        return self._text[i], self.label_names[self._label[i]], self._lang[i], self._source[i]
