"""``MetaConfig``: the typed settings of a meta-learning algorithm (inner loop, head, distance)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from xmeta.meta.registry import ALGORITHMS, AlgorithmSpec
from xmeta.models.heads import EPISODE_HEADS, EpisodeHead
from xmeta.registry import UnknownNameError


@dataclass
class MetaConfig:
    """Meta-learning settings; fields left at None/"auto" take the algorithm's defaults.

    Attributes:
        algorithm: a name in ``xmeta.meta.ALGORITHMS`` (protonet, fomaml, maml, protomaml).
        inner_steps: SGD steps on the support set during meta-training (ignored by protonet).
        inner_lr: inner-loop learning rate (the initial value when ``learn_inner_lr``).
        eval_inner_steps: inner steps when adapting for evaluation; None = ``inner_steps``.
        first_order: protomaml only (maml is always second order, fomaml first); None = default.
        inner_params: which tensors the inner loop adapts: "all", "head" (projection + episode
            head: ANIL-style), "top:N" (adapters of the top N layers + head), or a regex matched
            with ``re.search`` against meta-parameter names (e.g. ``"layer\\.1[01]\\.|head"``).
        learn_inner_lr: Meta-SGD: learn one inner learning rate per adapted tensor.
        head: "auto" (the algorithm's default) or a name in ``xmeta.models.heads.EPISODE_HEADS``:
            "proto", "linear_zero" or "linear_proto".
        distance: "euclidean" (squared) or "cosine".
        temperature: logits are divided by it; None = 1 for euclidean, 0.1 for cosine.
        learn_temperature: meta-learn the temperature.
        projection_dim: add a meta-learned linear projection ``d -> projection_dim``.
        recompute_inner_steps: second order only: keep no inner step's graph and recompute each
            step in the outer backward (``xmeta.meta.recompute``): the same meta-gradient with the
            peak memory of one inner step instead of all of them, for ~1 extra forward + backward
            per step.
    """

    algorithm: str = "protomaml"
    inner_steps: int = 5
    inner_lr: float = 1e-2
    eval_inner_steps: int | None = None
    first_order: bool | None = None
    inner_params: str = "all"
    learn_inner_lr: bool = False
    head: Literal["auto", "proto", "linear_zero", "linear_proto"] = "auto"
    distance: Literal["euclidean", "cosine"] = "euclidean"
    temperature: float | None = None
    learn_temperature: bool = False
    projection_dim: int | None = None
    recompute_inner_steps: bool = True

    def __post_init__(self) -> None:
        try:
            spec = ALGORITHMS.get(self.algorithm)
        except UnknownNameError as err:
            raise ValueError(str(err)) from None
        if self.inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
        if self.eval_inner_steps is not None and self.eval_inner_steps < 0:
            raise ValueError(f"eval_inner_steps must be >= 0, got {self.eval_inner_steps}")
        if self.inner_lr <= 0:
            raise ValueError(f"inner_lr must be > 0, got {self.inner_lr}")
        if spec.first_order is not None and self.first_order not in (None, spec.first_order):
            other = "fomaml" if spec.name == "maml" else "maml"
            raise ValueError(f"{spec.name} has first_order={spec.first_order}; use algorithm={other!r} instead")
        if self.head not in ("auto", *spec.heads):
            raise ValueError(f"head {self.head!r} does not fit {spec.name}; allowed: auto, {', '.join(spec.heads)}")
        if self.distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {self.distance!r}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ValueError(f"projection_dim must be >= 1, got {self.projection_dim}")
        self._check_inner_params()

    def _check_inner_params(self) -> None:
        sel = self.inner_params
        if sel in ("all", "head"):
            return
        if sel.startswith("top:"):
            n = sel[4:]
            if not n.isdigit() or int(n) < 1:
                raise ValueError(f"inner_params 'top:N' needs a positive integer N, got {sel!r}")
            return
        try:
            re.compile(sel)
        except re.error as err:
            raise ValueError(f"inner_params {sel!r} is neither all/head/top:N nor a valid regex: {err}") from None

    # ---- resolved views (fields keep None/"auto" so dataclasses.replace stays consistent) ----

    @property
    def spec(self) -> AlgorithmSpec:
        return ALGORITHMS.get(self.algorithm)

    @property
    def effective_first_order(self) -> bool:
        spec = self.spec
        if spec.first_order is not None:
            return spec.first_order
        return spec.default_first_order if self.first_order is None else self.first_order

    @property
    def second_order(self) -> bool:
        """True when meta-gradients differentiate through the inner loop (needs eager attention)."""
        return self.spec.inner_loop and not self.effective_first_order and self.inner_steps > 0

    @property
    def effective_head(self) -> str:
        return self.spec.default_head if self.head == "auto" else self.head

    @property
    def episode_head(self) -> type[EpisodeHead]:
        """The episode head class (``effective_head`` looked up in ``EPISODE_HEADS``)."""
        return EPISODE_HEADS.get(self.effective_head)

    @property
    def effective_temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        return 1.0 if self.distance == "euclidean" else 0.1

    @property
    def effective_eval_inner_steps(self) -> int:
        return self.inner_steps if self.eval_inner_steps is None else self.eval_inner_steps
