"""Bootstrap confidence intervals over episodes: per language, and stratified for the mean.

Episodes are the resampling unit (queries within an episode share a support set, so they are not
independent). For the mean over languages, episodes are resampled *within* each language
(stratified) and the languages then averaged with equal weight, which is the estimator reported.
Intervals are percentile intervals; with constant per-episode scores they have zero width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` means of ``values`` resampled with replacement, as one vectorised draw."""
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    return values[idx].mean(axis=1)


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (e.g. per-episode accuracies).

    Args:
        values: One score per episode (at least one).
        n_boot: Resamples.
        level: Confidence level.
        seed: Seeds the resampling so reports are reproducible.

    Returns:
        ``(lo, hi)``; a single value gives a zero-width interval (no spread can be estimated).
    """
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("bootstrap of zero values")
    rng = np.random.default_rng(seed)
    return _percentiles(_resampled_means(arr, n_boot, rng), level)


def stratified_bootstrap_ci(
    groups: Mapping[str, Sequence[float]], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Interval of the equal-weight mean over groups, resampling within each group.

    Args:
        groups: language -> per-episode scores (each non-empty).
        n_boot: Resamples.
        level: Confidence level.
        seed: Seeds the resampling.

    Returns:
        ``(lo, hi)`` for ``mean(mean(scores) for each language)``.
    """
    if not groups:
        raise ValueError("stratified bootstrap of zero groups")
    rng = np.random.default_rng(seed)
    # Languages in sorted order so the draw does not depend on dict order.
    per_group = [_resampled_means(np.asarray(groups[k], dtype=float), n_boot, rng) for k in sorted(groups)]
    return _percentiles(np.mean(per_group, axis=0), level)


def paired_difference(
    a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]]
) -> tuple[float, tuple[float, float]]:
    """Mean over languages of ``a - b`` per episode (same episodes, same order) and its stratified
    95% interval: most of the episode-to-episode spread is shared by two methods, so this interval
    is far tighter than either mean's own and says whether the two differ."""
    if set(a) != set(b) or any(len(a[k]) != len(b[k]) for k in a):
        raise ValueError("paired difference of scores on different episodes")
    diffs = {k: list(np.asarray(a[k], dtype=float) - np.asarray(b[k], dtype=float)) for k in a}
    return float(np.mean([np.mean(v) for v in diffs.values()])), stratified_bootstrap_ci(diffs)
