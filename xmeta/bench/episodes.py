"""The benchmark's episodes: drawn once per (K, language), shared by every method, leak-checked.

Episodes come from :class:`xmeta.data.episodes.EpisodeSampler`, which fixes episode ``i`` by
``(seed, lang, i, N, K, Q, splits)`` of the loaded corpus, so every run, method and resumption sees
the same ones; :func:`assert_identical_episodes` proves it for stored cells via their fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from xmeta.artifacts import TrainingData
from xmeta.bench.config import BenchConfig
from xmeta.bench.methods import MethodInfo
from xmeta.bench.store import episodes_fingerprint
from xmeta.interfaces import Episode

log = logging.getLogger(__name__)

EpisodeTable = dict[int, dict[str, list[Episode]]]  # k_shot -> lang -> episodes


class EpisodeMismatchError(AssertionError):
    """Two methods were scored on different episodes for the same K and language (a harness bug)."""


def episode_params(cfg: BenchConfig, k_shot: int, lang: str) -> dict[str, Any]:
    """What fixes a cell's episodes besides their uids (part of the resumption fingerprint)."""
    return {
        "task": cfg.task,
        "lang": lang,
        "n_way": cfg.n_way,
        "k_shot": k_shot,
        "q_query": cfg.q_query,
        "seed": cfg.seed,
        "episodes": cfg.episodes_per_lang,
        "support_split": cfg.support_split,
        "query_split": cfg.query_split,
    }


def adapt_seed(cfg: BenchConfig, k_shot: int, lang: str, index: int) -> int:
    """The ``seed`` passed to ``adapt`` for an episode: the same for every method (fairness)."""
    payload = json.dumps(["xmeta-bench-adapt", cfg.seed, cfg.task, lang, cfg.n_way, k_shot, cfg.q_query, index])
    return int.from_bytes(hashlib.blake2b(payload.encode(), digest_size=4).digest(), "little") & 0x7FFFFFFF


def load_eval_data(cfg: BenchConfig) -> Any:
    """The evaluation corpus (benchmark languages, support and query splits) as one Dataset."""
    from xmeta.data.tasks import load_task

    splits = sorted({cfg.support_split, cfg.query_split})
    return load_task(cfg.task, cfg.data_dir, langs=cfg.langs, splits=splits, **cfg.data_options)


def make_episodes(cfg: BenchConfig, dataset: Any) -> EpisodeTable:
    """Draw ``episodes_per_lang`` episodes per language for every K of the config."""
    from xmeta.data.episodes import EpisodeSampler

    table: EpisodeTable = {}
    for k in cfg.k_shot:
        sampler = EpisodeSampler(
            dataset,
            n_way=cfg.n_way,
            k_shot=k,
            q_query=cfg.q_query,
            langs=cfg.langs,
            support_split=cfg.support_split,
            query_split=cfg.query_split,
            seed=cfg.seed,
            on_small_class=cfg.on_small_class,
        )
        table[k] = {lang: sampler.episodes(cfg.episodes_per_lang, lang=lang) for lang in cfg.langs}
    return table


def fingerprints(cfg: BenchConfig, table: EpisodeTable) -> dict[tuple[int, str], str]:
    """``(K, lang) -> fingerprint`` of the episodes every method of that cell must run on."""
    return {
        (k, lang): episodes_fingerprint(eps, episode_params(cfg, k, lang))
        for k, by in table.items()
        for lang, eps in by.items()
    }


def assert_identical_episodes(cell_fingerprints: Mapping[str, Mapping[tuple[int, str], str]]) -> None:
    """Assert that all methods ran on the same episodes for each (K, language).

    Args:
        cell_fingerprints: method -> (K, lang) -> fingerprint of the episodes its cell ran on.

    Raises:
        EpisodeMismatchError: naming the cell and the methods that disagree.
    """
    seen: dict[tuple[int, str], tuple[str, str]] = {}
    for method, cells in cell_fingerprints.items():
        for key, fp in cells.items():
            first = seen.setdefault(key, (method, fp))
            if first[1] != fp:
                raise EpisodeMismatchError(
                    f"K={key[0]} {key[1]}: {method!r} ran on episodes {fp}, {first[0]!r} on {first[1]}"
                )


def _training_datasets(training: TrainingData, cfg: BenchConfig) -> list[Any]:
    from xmeta.data.tasks import load_task

    by_splits: dict[tuple[str, ...], list[str]] = {}
    for lang, splits in training.splits_by_lang.items():
        by_splits.setdefault(tuple(splits), []).append(lang)
    options = cfg.data_options if training.task == cfg.task else {}
    return [
        load_task(training.task, cfg.data_dir, langs=langs, splits=list(s), **options) for s, langs in by_splits.items()
    ]


def check_no_leakage(infos: Sequence[MethodInfo], table: EpisodeTable, cfg: BenchConfig) -> dict[str, str]:
    """Run the leakage check for every meta-trained method before anything is scored.

    Returns:
        method -> a one-line summary of what was checked (for results.json).

    Raises:
        xmeta.data.leakage.LeakageError: a query (or its translation) was in meta-training data.
    """
    from xmeta.data.leakage import check_leakage

    all_episodes = [ep for by in table.values() for eps in by.values() for ep in eps]
    n_queries = sum(len(ep.query) for ep in all_episodes)
    summary: dict[str, str] = {}
    for info in infos:
        if info.training is None:
            continue
        # Recorded ids need no data; an old run's splits are re-read from the data directory.
        sources = [info.training] if info.training.has_ids else _training_datasets(info.training, cfg)
        for train in sources:
            try:
                check_leakage(train, all_episodes)
            except Exception as err:
                err.args = (f"{info.name}: {err}",)
                raise
        langs = ", ".join(f"{k}:{'+'.join(v)}" for k, v in info.training.splits_by_lang.items())
        summary[info.name] = f"ok: {n_queries} queries vs {info.training.task} [{langs}]"
        log.info("leakage check %s: %s", info.name, summary[info.name])
    return summary
