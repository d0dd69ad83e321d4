"""Functional parameters: forward passes over a dict of tensors, and the shared SGD inner loop.

A "params" dict maps ``MetaModel`` parameter names (``encoder.backbone...lora_A.default.weight``,
``head.projection.weight``, ``inner_lrs.*``), plus an adapted episode head's tensors while the
inner loop adapts them (``episode_head.weight``, ``episode_head.bias``: ``EpisodeHead.tensor_names``),
to tensors. Only trainable tensors are in it: the frozen backbone is read from the module by
``torch.func.functional_call`` and never copied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.func import functional_call

from xmeta.meta.precision import autocast_frozen_weights
from xmeta.meta.recompute import recomputed_sgd_loop, step_lr
from xmeta.models.inputs import Batch, Features

if TYPE_CHECKING:
    from xmeta.meta.model import MetaModel

Params = dict[str, Tensor]


def subdict(params: Mapping[str, Tensor], prefix: str) -> Params:
    """Entries under ``prefix`` with the prefix stripped (``"encoder."`` -> names inside the encoder)."""
    n = len(prefix)
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix)}


def encoder_features(model: MetaModel, params: Mapping[str, Tensor], batch: Batch) -> Tensor:
    """Pooled encoder embeddings computed with the adapter tensors in ``params``.

    ``Features`` are already encoded (``xmeta.meta.FeatureMemo``: valid only while the encoder
    tensors in ``params`` are the ones the features were computed with).
    """
    if isinstance(batch, Features):
        return batch.features
    own = subdict(params, "encoder.")
    frozen = autocast_frozen_weights(model.encoder, own)  # cast once, not at every forward
    return functional_call(model.encoder, {**frozen, **own}, args=(), kwargs=dict(batch))


def project(model: MetaModel, params: Mapping[str, Tensor], z: Tensor) -> Tensor:
    """Apply the meta-learned projection (if any) with the tensors in ``params`` (``ProtoHead.forward``)."""
    return model.head(z, subdict(params, "head."))


def logit_scale(model: MetaModel, params: Mapping[str, Tensor]) -> Tensor:
    """``1 / temperature`` from ``params`` (learned) or the head's buffer (fixed) (``ProtoHead.scale``)."""
    return model.head.scale(subdict(params, "head."))


def sgd_inner_loop(
    loss_fn: Callable[[Params], Tensor],
    params: Mapping[str, Tensor],
    names: Sequence[str],
    *,
    steps: int,
    lrs: Mapping[str, Tensor | float],
    first_order: bool,
    recompute: bool = False,
    per_step_lrs: bool = False,
    after_step: Callable[[int, Params], None] | None = None,
) -> tuple[Params, list[Tensor]]:
    """``steps`` plain SGD steps on ``loss_fn`` over the tensors ``names``; the others pass through.

    Second order (``first_order=False``) keeps the graph of every inner gradient, so the outer
    loss differentiates through the whole loop. First order uses the inner gradients as
    constants: the outer gradient at the adapted tensors flows back to the initial ones with an
    identity Jacobian (FOMAML), and learned learning rates in ``lrs`` still get a gradient.

    With ``recompute`` (second order only), no step's graph is kept: the outer backward
    recomputes one step at a time (``xmeta.meta.recompute``): the same meta-gradient with the
    peak memory of a single inner step, for one extra forward + backward per step. Every
    differentiable input of ``loss_fn`` must then come through ``params``.

    Args:
        lrs: per adapted tensor: a float, a 0-d tensor, a tensor shaped like the parameter
            (Meta-SGD) or, with ``per_step_lrs``, a vector of one rate per step (MAML++'s LSLR).
        after_step: called with ``(step, params)`` after each step (MAML++'s multi-step loss reads
            the intermediate tensors); not available with ``recompute``.

    Returns:
        The adapted params dict and the detached support losses before each step.
    """
    if recompute and not first_order and steps > 0:
        if after_step is not None:
            raise ValueError("after_step needs the intermediate tensors, which a recomputed loop does not keep")
        return recomputed_sgd_loop(loss_fn, params, names, steps=steps, lrs=lrs, per_step_lrs=per_step_lrs)
    fast: Params = dict(params)
    for n in names:
        p = fast[n]
        # A fresh node per adapted tensor: inner gradients are then partial derivatives in that
        # copy alone. ProtoMAML's head init depends on the encoder through the prototypes; without
        # the copy, that path would leak into the encoder's inner gradient.
        fast[n] = p.clone() if p.requires_grad else p.detach().clone().requires_grad_(True)
    losses: list[Tensor] = []
    for t in range(steps):
        loss = loss_fn(fast)
        grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=not first_order, allow_unused=True)
        losses.append(loss.detach())
        for n, g in zip(names, grads):
            if g is not None:  # unused tensors (e.g. adapters above a cached cut) keep their value
                fast[n] = fast[n] - step_lr(lrs[n], t, per_step_lrs) * g
        if after_step is not None:
            after_step(t, dict(fast))
    return fast, losses
