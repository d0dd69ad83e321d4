"""Bootstrap intervals on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from xmeta.bench.stats import bootstrap_ci, paired_difference, stratified_bootstrap_ci


def test_constant_scores_give_a_zero_width_interval() -> None:
    assert bootstrap_ci([0.4] * 20) == pytest.approx((0.4, 0.4))
    assert stratified_bootstrap_ci({"a": [0.2] * 5, "b": [0.6] * 7}) == pytest.approx((0.4, 0.4))


def test_single_value_is_zero_width() -> None:
    assert bootstrap_ci([0.7]) == pytest.approx((0.7, 0.7))


def test_interval_of_a_known_distribution_has_the_normal_width() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0.5, 0.1, size=400)
    lo, hi = bootstrap_ci(values, n_boot=4000, seed=3)
    assert lo < values.mean() < hi
    assert lo < 0.5 < hi  # the true mean
    expected = 2 * 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert hi - lo == pytest.approx(expected, rel=0.15)


def test_stratified_interval_resamples_within_languages() -> None:
    rng = np.random.default_rng(2)
    groups = {"a": rng.normal(0.3, 0.1, 300), "b": rng.normal(0.7, 0.2, 200)}
    lo, hi = stratified_bootstrap_ci(groups, n_boot=4000, seed=0)
    mean = np.mean([g.mean() for g in groups.values()])
    assert lo < mean < hi
    # Var of an equal-weight mean of independent group means: sum(var_i / n_i) / L^2.
    se = np.sqrt(sum(g.var(ddof=1) / len(g) for g in groups.values())) / len(groups)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_is_reproducible_and_validates_input() -> None:
    values = [0.1, 0.5, 0.3, 0.9]
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        stratified_bootstrap_ci({})


def test_paired_difference_removes_the_shared_spread_and_refuses_unpaired_scores() -> None:
    rng = np.random.default_rng(0)
    hard = {lang: list(rng.uniform(0.2, 0.9, 20)) for lang in ("aaa", "bbb", "ccc")}  # per-episode difficulty
    better = {lang: [x + 0.02 for x in v] for lang, v in hard.items()}
    d, (lo, hi) = paired_difference(better, hard)
    assert d == pytest.approx(0.02) and lo == pytest.approx(0.02) and hi == pytest.approx(0.02)
    own_lo, own_hi = stratified_bootstrap_ci(better)
    assert own_hi - own_lo > 0.1  # either mean alone cannot see a 2-point gap
    with pytest.raises(ValueError, match="different episodes"):
        paired_difference(better, {"aaa": hard["aaa"]})
