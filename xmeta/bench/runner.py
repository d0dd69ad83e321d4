"""The benchmark loop: methods x K x languages on shared episodes, resumable, failure-tolerant.

Order of work, and why:

1. Describe every method (cheap: run configs, files) so a bad spec fails before anything loads.
2. Load the corpus and draw all episodes once; they are shared by every method.
3. Run the leakage check of every meta-trained method against all queries; a leak aborts here.
4. Per method: skip cells already stored for the same episodes; load the learner once; run each
   remaining (K, language) cell and save it atomically as soon as it finishes. A failing cell is
   stored as failed (with its error) and the others go on. The learner is dropped before the next
   method loads, so methods do not share memory and peak RSS is attributable.
5. Assert identical episodes across methods, aggregate, write results.json / results.md / plots.
"""

from __future__ import annotations

import gc
import inspect
import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from xmeta.bench.aggregate import k_result
from xmeta.bench.config import BenchConfig
from xmeta.bench.cost import PeakRSS
from xmeta.bench.episodes import (
    EpisodeTable,
    adapt_seed,
    assert_identical_episodes,
    check_no_leakage,
    fingerprints,
    load_eval_data,
    make_episodes,
)
from xmeta.bench.methods import BuildContext, MethodInfo, MethodSpec, build_learner, describe_method, parse_method
from xmeta.bench.metrics import episode_scores, load_metric
from xmeta.bench.store import Cell, CellStore, EpisodeResult
from xmeta.config import save_config, to_dict
from xmeta.errors import writing
from xmeta.interfaces import Episode, Learner

log = logging.getLogger(__name__)


def warm_up(learner: Learner) -> bool:
    """Call the learner's argument-free instance method ``load()`` if it has one (ICLLearner does).

    Lazy model loading then counts as the method's load time instead of inflating the first
    episode. Only a method bound to the instance qualifies: ``MetaLearner.load`` is a classmethod
    constructor that needs a directory and must not be called here.
    """
    load = getattr(learner, "load", None)
    if not inspect.ismethod(load) or load.__self__ is not learner:
        return False
    required = [
        p
        for p in inspect.signature(load).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if required:
        return False
    load()
    return True


def run_episode(learner: Learner, episode: Episode, seed: int, missing: str = "wrong") -> EpisodeResult:
    """Adapt on the episode's support, predict its queries, score them.

    A predictor with ``predict_examples(query)`` (external predictions, looked up by uid) gets the
    query examples; any other gets the query texts. A query a prediction marks ``missing`` (no
    prediction in a file, an LLM answer that names no label) counts as a wrong answer by default
    (``missing="wrong"``); ``missing="exclude"`` scores only the answered queries (an explicit,
    labelled option). Either way the episode records how many queries were answered (coverage).
    A predictor with ``usage()`` (server-backed LLMs) has its request and token counts recorded.
    """
    t0 = time.perf_counter()
    predictor = learner.adapt(episode.support, seed=seed)
    t1 = time.perf_counter()
    by_example = getattr(predictor, "predict_examples", None)
    pred = by_example(episode.query) if by_example else predictor.predict([q.text for q in episode.query])
    t2 = time.perf_counter()
    labels = np.asarray(pred.labels).astype(int).reshape(-1)
    if len(labels) != len(episode.query):
        raise ValueError(f"predictor returned {len(labels)} labels for {len(episode.query)} queries")
    refs = np.array([q.label for q in episode.query])
    flagged = np.asarray(getattr(pred, "missing", np.zeros(len(labels), bool)), dtype=bool)
    unanswered = (flagged if flagged.shape == labels.shape else np.zeros(len(labels), bool)) | (labels < 0)
    labels = np.where(unanswered, -1, labels)  # a missing answer never matches a class
    keep = ~unanswered if missing == "exclude" else np.ones(len(labels), bool)
    scores: dict[str, float | None] = {"accuracy": None, "macro_f1": None}
    if keep.any():
        scores = dict(episode_scores(labels[keep].tolist(), refs[keep].tolist(), episode.n_way))
    usage = getattr(predictor, "usage", None)
    return EpisodeResult(
        index=episode.index,
        accuracy=scores["accuracy"],
        macro_f1=scores["macro_f1"],
        n_scored=int(keep.sum()),
        n_queries=len(labels),
        adapt_s=t1 - t0,
        predict_s=t2 - t1,
        pred=labels.tolist(),
        n_answered=int((~unanswered).sum()),
        usage=dict(usage()) if callable(usage) else None,
    )


def run_cell(
    learner: Learner,
    spec: MethodSpec,
    k: int,
    lang: str,
    episodes: Sequence[Episode],
    fp: str,
    cfg: BenchConfig,
    bar: Any,
) -> Cell:
    """All episodes of one method x K x language; an exception makes the cell ``failed``."""
    cell = Cell(method=spec.name, k_shot=k, lang=lang, fingerprint=fp, status="ok")
    with PeakRSS(cfg.rss_interval_s) as rss:
        try:
            for ep in episodes:
                cell.episodes.append(
                    run_episode(learner, ep, adapt_seed(cfg, k, lang, ep.index), cfg.missing_predictions)
                )
                bar.update(1)
        except Exception as err:  # one language failing must not lose the other cells
            log.warning("%s K=%d %s failed: %s: %s", spec.name, k, lang, type(err).__name__, err)
            cell.status, cell.error = "failed", f"{type(err).__name__}: {err}"
            cell.traceback = traceback.format_exc(limit=20)
            cell.episodes = []
    cell.peak_rss_mb, cell.baseline_rss_mb = rss.peak_mb, rss.baseline_mb
    return cell


def _failed_cells(
    spec: MethodSpec, todo: Sequence[tuple[int, str]], fps: Mapping[tuple[int, str], str], err: BaseException
) -> list[Cell]:
    msg = f"{type(err).__name__}: {err}"
    tb = traceback.format_exc(limit=20)
    return [Cell(spec.name, k, lang, fps[(k, lang)], "failed", error=msg, traceback=tb) for k, lang in todo]


def _run_method(
    spec: MethodSpec,
    ctx: BuildContext,
    table: EpisodeTable,
    fps: Mapping[tuple[int, str], str],
    store: CellStore,
    cfg: BenchConfig,
    learner: Learner | None,
    bar: Any,
) -> None:
    """Run the cells of one method that are not stored yet (loading its learner only if any)."""
    todo = [
        (k, lang)
        for k in cfg.k_shot
        for lang in cfg.langs
        if store.reusable(spec.name, k, lang, fps[(k, lang)], cfg.retry_failed) is None
    ]
    if not todo:
        log.info("%s: all %d cells already done", spec.name, len(cfg.k_shot) * len(cfg.langs))
        return
    t0 = time.perf_counter()
    try:
        if learner is None:
            learner = build_learner(spec, ctx)
        warm_up(learner)
    except Exception as err:
        log.error("%s: cannot load the method: %s: %s", spec.name, type(err).__name__, err)
        for cell in _failed_cells(spec, todo, fps, err):
            store.save(cell)
        bar.update(len(todo) * cfg.episodes_per_lang)
        return
    load_seconds = time.perf_counter() - t0
    for k, lang in todo:
        bar.set_description(f"{spec.name} K={k} {lang}")
        before = bar.n
        cell = run_cell(learner, spec, k, lang, table[k][lang], fps[(k, lang)], cfg, bar)
        cell.load_s = load_seconds
        bar.update(before + len(table[k][lang]) - bar.n)  # a failed cell skips its remaining episodes
        store.save(cell)
    del learner
    gc.collect()


def run_bench(
    cfg: BenchConfig, *, learners: Mapping[str, Learner] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) a benchmark and write its outputs to ``cfg.out``.

    Args:
        cfg: The benchmark.
        learners: Already built learners by method spec, used instead of the registry's build
            (notebooks, tests); their specs must still be valid method specs.
        progress: Show a tqdm bar.

    Returns:
        The results object that was written to ``results.json``.

    Raises:
        InputError / ConfigError: Bad data, missing run directories or files (before any work).
        WriteError: The output could not be written (full disk, no permission); stored cells stay.
        xmeta.data.leakage.LeakageError: A meta-trained method saw an evaluation query.
        EpisodeMismatchError: Methods were scored on different episodes (a harness bug).
    """
    from xmeta.bench.report import write_outputs

    learners = dict(learners or {})
    for metric in ("accuracy", "macro_f1"):
        load_metric(metric)  # a broken metric module fails here, not after the first method ran
    out = Path(cfg.out)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    specs = [parse_method(m) for m in cfg.methods]
    ctxs = {s.name: BuildContext(cfg.task, cfg.encoder, cfg.options_for(s.kind)) for s in specs}
    infos: list[MethodInfo] = [describe_method(s, ctxs[s.name]) for s in specs]
    log.info("loading %s for %d languages", cfg.task, len(cfg.langs))
    table = make_episodes(cfg, load_eval_data(cfg))
    fps = fingerprints(cfg, table)
    leakage = check_no_leakage(infos, table, cfg)
    store = CellStore(out / "cells")
    total = len(specs) * len(cfg.k_shot) * len(cfg.langs) * cfg.episodes_per_lang
    with tqdm(total=total, disable=not progress, unit="ep", dynamic_ncols=True) as bar:
        for spec in specs:
            done_before = bar.n
            _run_method(spec, ctxs[spec.name], table, fps, store, cfg, learners.pop(spec.name, None), bar)
            bar.update(done_before + len(cfg.k_shot) * len(cfg.langs) * cfg.episodes_per_lang - bar.n)
    cells = {s.name: {(k, lang): store.load(s.name, k, lang) for k in cfg.k_shot for lang in cfg.langs} for s in specs}
    missing = [f"{m} K={k} {lang}" for m, by in cells.items() for (k, lang), c in by.items() if c is None]
    if missing:
        raise RuntimeError(f"cells missing after the run (was the output directory changed meanwhile?): {missing[:5]}")
    # Every stored cell, fresh or resumed, must have run on the episodes drawn now.
    assert_identical_episodes({m: {key: c.fingerprint for key, c in by.items()} for m, by in cells.items()})
    for m, by in cells.items():
        for key, c in by.items():
            if c.fingerprint != fps[key]:
                raise AssertionError(f"{m} K={key[0]} {key[1]}: stored cell ran on other episodes than this run's")
    results = _assemble(cfg, infos, table, cells, leakage)
    write_outputs(results, cfg, out)
    return results


def _assemble(
    cfg: BenchConfig,
    infos: Sequence[MethodInfo],
    table: EpisodeTable,
    cells: Mapping[str, Mapping[tuple[int, str], Cell | None]],
    leakage: Mapping[str, str],
) -> dict[str, Any]:
    by_k = {}
    for k in cfg.k_shot:
        k_cells = {m: {lang: c for (kk, lang), c in by.items() if kk == k and c is not None} for m, by in cells.items()}
        by_k[str(k)] = k_result(cfg, k, infos, k_cells, table[k])
    extra = {"leakage_check": dict(leakage), "config": to_dict(cfg)}
    if len(cfg.k_shot) == 1:
        return {**by_k[str(cfg.k_shot[0])], **extra}
    common = {
        key: by_k[str(cfg.k_shot[0])][key] for key in ("task", "n_way", "q_query", "episodes_per_lang", "seed", "langs")
    }
    return {**common, "k_shot": list(cfg.k_shot), "by_k": by_k, **extra}
