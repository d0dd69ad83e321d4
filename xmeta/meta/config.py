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
        learn_inner_lr: meta-learn the inner learning rates (initialised at ``inner_lr``), shaped
            by ``inner_lr_shape``.
        inner_lr_shape: what a learned rate covers: "tensor" (one per adapted tensor), "tensor_step"
            (one per adapted tensor and inner step: MAML++'s per-layer per-step rates, LSLR) or
            "element" (one per adapted weight: Meta-SGD; an adapted episode head's tensors, whose
            shape depends on the episode, keep one rate each). Needs ``learn_inner_lr``.
        multi_step_loss_steps: MAML++'s multi-step loss: for the first N outer steps the outer
            loss is a weighted sum of the query losses after every inner step, the weights
            annealed from uniform towards the last step (``multi_step_loss_weights``); then the
            last step's loss alone. 0 = off.
        first_order_until: MAML++'s derivative-order annealing: second-order configs use first-order
            meta-gradients for outer steps ``< first_order_until``, then second order. 0 = off.
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
    inner_lr_shape: Literal["tensor", "tensor_step", "element"] = "tensor"
    multi_step_loss_steps: int = 0
    first_order_until: int = 0
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
        if self.inner_lr_shape not in ("tensor", "tensor_step", "element"):
            raise ValueError(
                f"inner_lr_shape must be 'tensor', 'tensor_step' or 'element', got {self.inner_lr_shape!r}"
            )
        if self.inner_lr_shape != "tensor" and not self.learn_inner_lr:
            raise ValueError(f"inner_lr_shape={self.inner_lr_shape!r} shapes learned rates: set learn_inner_lr: true")
        if self.multi_step_loss_steps < 0 or self.first_order_until < 0:
            raise ValueError(
                "multi_step_loss_steps and first_order_until must be >= 0, got "
                f"{self.multi_step_loss_steps} and {self.first_order_until}"
            )
        if self.multi_step_loss_steps and not (spec.inner_loop and self.inner_steps > 0):
            raise ValueError(
                f"multi_step_loss_steps needs an inner loop; {spec.name} with {self.inner_steps} steps has none"
            )
        if self.first_order_until and not self.second_order:
            raise ValueError(
                "first_order_until switches a second-order config to first order early; this one is first order"
            )
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

    def first_order_at(self, step: int | None) -> bool:
        """The gradient order at outer step ``step`` (None: after any warm-up, i.e. the configured order)."""
        if step is not None and step < self.first_order_until:
            return True
        return self.effective_first_order

    def multi_step_loss_weights(self, step: int | None) -> list[float] | None:
        """Weights of the query losses after inner steps ``1..inner_steps`` at outer step ``step``.

        MAML++ (Antoniou et al., 2019): uniform ``1/S`` at step 0; each non-final weight then
        falls linearly by ``1/S`` over ``multi_step_loss_steps`` outer steps, floored at ``0.03/S``,
        and the final weight takes the rest, so the weights always sum to 1. None (only the last
        step's loss) when the multi-step loss is off, finished, or ``step`` is None (evaluation).
        """
        n, horizon = self.inner_steps, self.multi_step_loss_steps
        if step is None or not horizon or step >= horizon or n < 2:
            return None
        decay, floor = 1.0 / n / horizon, 0.03 / n
        weights = [max(1.0 / n - step * decay, floor) for _ in range(n - 1)]
        return [*weights, 1.0 - sum(weights)]

    @property
    def effective_eval_inner_steps(self) -> int:
        return self.inner_steps if self.eval_inner_steps is None else self.eval_inner_steps
