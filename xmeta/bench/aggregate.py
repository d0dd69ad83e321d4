"""From cells to the ``results.json`` object of one K: per-language and mean scores, intervals, cost.

Per language, accuracy is the mean of per-episode accuracies (every episode has the same number
of queries, so this is also the pooled accuracy) and macro-F1 the mean of per-episode macro-F1
over the episode's N classes (episode label ids are local, so pooling them across episodes would
be meaningless). The mean over languages weights languages equally and is taken over the languages
where the method succeeded; ``complete`` says whether that is all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xmeta.bench.config import BenchConfig
from xmeta.bench.methods import MethodInfo
from xmeta.bench.stats import bootstrap_ci, stratified_bootstrap_ci
from xmeta.bench.store import Cell
from xmeta.interfaces import Episode


def _scores(cell: Cell, key: str) -> list[float]:
    return [getattr(e, key) for e in cell.episodes if getattr(e, key) is not None]


def lang_summary(cell: Cell, cfg: BenchConfig, seed: int) -> dict[str, Any]:
    """The per_lang entry of one cell (a failed cell keeps its error instead of scores)."""
    if cell.status != "ok":
        return {"status": "failed", "error": cell.error, "accuracy": None, "ci95": None, "macro_f1": None}
    acc, f1 = _scores(cell, "accuracy"), _scores(cell, "macro_f1")
    n_answered = sum(e.n_scored if e.n_answered is None else e.n_answered for e in cell.episodes)
    n_queries = sum(e.n_queries for e in cell.episodes)
    if not acc:
        return {
            "status": "failed",
            "error": "no query could be scored",
            "accuracy": None,
            "ci95": None,
            "macro_f1": None,
        }
    return {
        "status": "ok",
        "accuracy": float(np.mean(acc)),
        "ci95": list(bootstrap_ci(acc, n_boot=cfg.bootstrap, level=cfg.ci, seed=seed)),
        "macro_f1": float(np.mean(f1)),
        "macro_f1_ci95": list(bootstrap_ci(f1, n_boot=cfg.bootstrap, level=cfg.ci, seed=seed)),
        "n_episodes": len(acc),
        "coverage": n_answered / n_queries if n_queries else 0.0,
    }


def cost_summary(cells: Sequence[Cell]) -> dict[str, Any]:
    """Seconds per episode (adapt + predict), ms per query (predict), peak RSS over the cells."""
    eps = [e for c in cells for e in c.episodes]
    loads = [c.load_s for c in cells if c.load_s is not None]
    load_seconds = max(loads) if loads else None
    if not eps:
        return {"seconds_per_episode": None, "ms_per_query": None, "peak_rss_mb": None, "load_seconds": load_seconds}
    adapt = sum(e.adapt_s for e in eps)
    predict = sum(e.predict_s for e in eps)
    queries = sum(e.n_queries for e in eps)
    peaks = [c.peak_rss_mb for c in cells if c.peak_rss_mb is not None]
    usage = [e.usage for e in eps if e.usage]
    tokens = {}
    if usage:  # server-backed LLMs: the tokens of every response the method needed; `cached` = served from disk
        for key in ("requests", "cached", "prompt_tokens", "completion_tokens"):
            tokens[f"{key}_per_episode"] = sum(u.get(key, 0) for u in usage) / len(usage)
    return {
        **tokens,
        "seconds_per_episode": (adapt + predict) / len(eps),
        "adapt_seconds_per_episode": adapt / len(eps),
        "ms_per_query": 1000.0 * predict / queries if queries else None,
        "peak_rss_mb": max(peaks) if peaks else None,
        "load_seconds": load_seconds,
        "episodes_timed": len(eps),
    }


def method_summary(info: MethodInfo, cells: Mapping[str, Cell], cfg: BenchConfig) -> dict[str, Any]:
    """The ``methods[<name>]`` object of one K."""
    per_lang = {lang: lang_summary(cells[lang], cfg, cfg.seed) for lang in cfg.langs if lang in cells}
    ok = {lang: s for lang, s in per_lang.items() if s["status"] == "ok"}
    groups = {lang: _scores(cells[lang], "accuracy") for lang in ok}
    out: dict[str, Any] = {
        "display": info.display,
        "kind": info.kind,
        **info.details,
        "mean_accuracy": float(np.mean([s["accuracy"] for s in ok.values()])) if ok else None,
        "mean_ci95": list(stratified_bootstrap_ci(groups, n_boot=cfg.bootstrap, level=cfg.ci, seed=cfg.seed))
        if ok
        else None,
        "mean_macro_f1": float(np.mean([s["macro_f1"] for s in ok.values()])) if ok else None,
        "n_langs": len(ok),
        "coverage": float(np.mean([s["coverage"] for s in ok.values()])) if ok else None,
        "scored_on": "answered queries only" if cfg.missing_predictions == "exclude" else "all queries",
        "complete": len(ok) == len(cfg.langs),
        "failed": {lang: s["error"] for lang, s in per_lang.items() if s["status"] != "ok"},
        "per_lang": per_lang,
        "cost": cost_summary([cells[lang] for lang in ok]),
    }
    return out


def k_result(
    cfg: BenchConfig,
    k_shot: int,
    infos: Sequence[MethodInfo],
    cells: Mapping[str, Mapping[str, Cell]],
    episodes: Mapping[str, Sequence[Episode]],
) -> dict[str, Any]:
    """The full results object of one K (the schema of results.json)."""
    return {
        "task": cfg.task,
        "n_way": cfg.n_way,
        "k_shot": k_shot,
        "q_query": cfg.q_query,
        "episodes_per_lang": cfg.episodes_per_lang,
        "seed": cfg.seed,
        "support_split": cfg.support_split,
        "query_split": cfg.query_split,
        "langs": list(cfg.langs),
        "methods": {info.name: method_summary(info, cells.get(info.name, {}), cfg) for info in infos},
        "episodes": {
            lang: [{"index": ep.index, **ep.uids(), "label_names": list(ep.label_names)} for ep in eps]
            for lang, eps in episodes.items()
        },
    }
