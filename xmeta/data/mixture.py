"""Episodes from several tasks: task diversity for meta-training.

``MixedSampler`` draws episode ``i`` from an auxiliary sampler (another task, e.g. AfriSenti
sentiment) with probability ``fraction`` and from the main one otherwise; the choice is a stable
function of ``(seed, i)``, so a resumed run draws the same episodes. Both samplers' rows count
as read by meta-training (``leakage_records``).
"""

from __future__ import annotations

from xmeta.data.episodes import EpisodeSampler, episode_rng
from xmeta.interfaces import Episode, Example


class MixedSampler:
    """Episode ``i`` from ``aux`` with probability ``fraction``, else from ``main``.

    Args:
        main: the main task's sampler (e.g. SIB-200 topics).
        aux: the auxiliary task's sampler (e.g. AfriSenti sentiment, 3-way).
        fraction: the share of auxiliary episodes, in ``[0, 1]``.
        seed: fixes which episodes are auxiliary.
    """

    def __init__(self, main: EpisodeSampler, aux: EpisodeSampler, fraction: float, seed: int = 0) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        self.main, self.aux, self.fraction, self.seed = main, aux, fraction, seed

    def is_aux(self, index: int) -> bool:
        """Whether episode ``index`` comes from the auxiliary task."""
        return bool(episode_rng(self.seed, "mixture", index).random() < self.fraction)

    def episode(self, index: int) -> Episode:
        return (self.aux if self.is_aux(index) else self.main).episode(index)

    def leakage_records(self, role: str) -> list[tuple[str, str | None]]:
        return self.main.leakage_records(role) + self.aux.leakage_records(role)

    def pool_examples(self) -> list[Example]:
        """Every example an episode of either task can draw (``EpisodeSampler.pool_examples``)."""
        return self.main.pool_examples() + self.aux.pool_examples()
