"""Meta-validation: the one protocol that chooses between training steps and between runs.

Validation episodes are N-way K-shot episodes of *validation* languages (never training or
evaluation languages) with support and queries both from their ``dev`` split (disjoint within an
episode; classes with fewer than K + Q dev sentences give fewer queries). ``dev`` only: the
benchmark's queries come from ``test``, and since SIB-200 is parallel, a test sentence of a
validation language is a translation of an evaluation query; choosing on dev keeps every
evaluation query's content out of every decision. The same episodes and code serve the recipe's
in-training validation (the best step of a run, over ``data.val_langs``) and
``eval/select_runs.py`` (the choice between runs, over the 74 languages of ``val:wide74``).

The score is the mean over languages (equal weight) of the per-episode query accuracy, with a
percentile-bootstrap 95% interval that resamples episodes within each language (the benchmark's
estimator, ``xmeta.bench.stats``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from xmeta.bench.stats import stratified_bootstrap_ci
from xmeta.data import EpisodeSampler, load_task
from xmeta.interfaces import Episode, Learner


def validation_episodes(
    task: str,
    langs: Sequence[str],
    *,
    n_way: int,
    k_shot: int,
    q_query: int,
    episodes_per_lang: int,
    seed: int = 0,
    data_dir: str | None = None,
) -> list[Episode]:
    """The fixed validation episodes: ``episodes_per_lang`` per language, support and queries from dev."""
    val = load_task(task, data_dir=data_dir, langs=list(langs), splits=["dev"])
    # dev holds ~99 sentences per language: a class may have fewer than K + Q, so shrink queries.
    sampler = EpisodeSampler(val, n_way=n_way, k_shot=k_shot, q_query=q_query, support_split="dev",
                             query_split="dev", seed=seed, on_small_class="shrink")  # fmt: skip
    return [sampler.episode(i, lang=lang) for lang in langs for i in range(episodes_per_lang)]


@dataclass
class ValidationScore:
    """A validation result.

    Attributes:
        accuracy: mean over languages of the mean per-episode query accuracy.
        ci: 95% percentile-bootstrap interval ``(lo, hi)`` of ``accuracy``.
        per_lang: language -> mean per-episode accuracy.
        episodes, queries: how much was scored.
    """

    accuracy: float
    ci: tuple[float, float]
    per_lang: dict[str, float] = field(default_factory=dict)
    episodes: int = 0
    queries: int = 0

    @property
    def half_width(self) -> float:
        return (self.ci[1] - self.ci[0]) / 2

    def to_dict(self) -> dict[str, object]:
        return {"accuracy": self.accuracy, "ci": list(self.ci), "half_width": self.half_width,
                "episodes": self.episodes, "queries": self.queries, "per_lang": self.per_lang}  # fmt: skip


def episode_accuracy(learner: Learner, episode: Episode) -> float:
    """Query accuracy of ``learner`` adapted to the episode's support set (seeded by its index)."""
    pred = learner.adapt(episode.support, seed=episode.index).predict([q.text for q in episode.query])
    return float((np.asarray(pred.labels) == np.array([q.label for q in episode.query])).mean())


def score(episodes: Sequence[Episode], accuracies: Sequence[float], *, n_boot: int = 2000) -> ValidationScore:
    """The validation score of per-episode ``accuracies`` (in the order of ``episodes``)."""
    by_lang: dict[str, list[float]] = {}
    for ep, acc in zip(episodes, accuracies, strict=True):
        by_lang.setdefault(ep.lang, []).append(float(acc))
    per_lang = {lang: float(np.mean(v)) for lang, v in by_lang.items()}
    ci = stratified_bootstrap_ci(by_lang, n_boot=n_boot) if by_lang else (float("nan"), float("nan"))
    return ValidationScore(
        float(np.mean(list(per_lang.values()))) if per_lang else float("nan"),
        ci,
        per_lang,
        len(episodes),
        sum(len(ep.query) for ep in episodes),
    )


def validate(
    learner: Learner, episodes: Sequence[Episode], *, progress: Callable[[int], None] | None = None
) -> ValidationScore:
    """Score ``learner`` on ``episodes`` (one process; the recipe splits episodes over ranks itself)."""
    accuracies = []
    for ep in episodes:
        accuracies.append(episode_accuracy(learner, ep))
        if progress is not None:
            progress(1)
    return score(episodes, accuracies)
