"""Second-order inner loop with per-step recomputation: the memory of one inner step, the same meta-gradient.

Differentiating through T SGD steps ``θ_{t+1} = θ_t - α ∇L(θ_t)`` the plain way keeps the graph of
every step's gradient (built with ``create_graph``) until the outer backward: memory grows with T.
Here the loop is one autograd node. Its forward runs the steps without any graph and keeps only
the small adapted tensors ``θ_t``; its backward walks the steps in reverse, and for each one
recomputes ``∇L(θ_t)`` with a graph and back-propagates the outer gradient through it:

    ḡ_t = ḡ_{t+1} - α H_t ḡ_{t+1}          (H_t: Hessian of the support loss at θ_t, as an HVP)
    c̄  += -α (∂∇L/∂c)ᵀ ḡ_{t+1}             (every other differentiable input c of the loss)
    ᾱ  += -<ḡ_{t+1}, ∇L(θ_t)>              (learned inner learning rates, Meta-SGD)

This is exactly the chain rule the plain graph applies (same operations, same order within a
step), at the price of one extra forward + backward per step (the last step's graph is built in
the forward and kept, so T - 1 steps are recomputed). The RNG state (dropout) and the
autocast state of each step are recorded and restored, so the recomputation sees what the
forward saw.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

Params = dict[str, Tensor]


def step_lr(lr: Tensor | float, step: int, per_step: bool) -> Tensor | float:
    """The learning rate of inner step ``step``: ``lr[step]`` for per-step rates (the last one for
    steps past their number, e.g. more steps at evaluation than in meta-training), else ``lr``."""
    if not per_step or not isinstance(lr, Tensor):
        return lr
    return lr[min(step, lr.shape[0] - 1)]


@dataclass
class _StepState:
    cpu_rng: Tensor
    cuda_rng: list[Tensor] | None
    autocast: dict[str, tuple[bool, torch.dtype]]

    @classmethod
    def capture(cls) -> _StepState:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
        amp = {d: (torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in devices}
        return cls(torch.get_rng_state(), cuda, amp)

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        devices = list(range(len(self.cuda_rng))) if self.cuda_rng is not None else []
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.random.fork_rng(devices=devices))
            torch.set_rng_state(self.cpu_rng)
            if self.cuda_rng is not None:
                torch.cuda.set_rng_state_all(self.cuda_rng)
            for device, (enabled, dtype) in self.autocast.items():
                stack.enter_context(torch.autocast(device, dtype=dtype, enabled=enabled))
            stack.enter_context(torch.enable_grad())
            yield


@dataclass
class _Loop:
    """Everything the autograd node needs besides its tensor inputs."""

    loss_fn: Callable[[Params], Tensor]
    base: Params
    names: list[str]
    context_names: list[str]
    steps: int
    lr_of: list[int | float | Tensor]  # per adapted tensor: the index of a learned lr input, or a constant rate
    per_step: bool = False  # learned rates are vectors of one rate per step (MAML++'s LSLR)
    losses: list[Tensor] = field(default_factory=list)

    def params(self, theta: Sequence[Tensor], context: Sequence[Tensor]) -> Params:
        p = dict(self.base)
        p.update(zip(self.names, theta))
        p.update(zip(self.context_names, context))
        return p

    def lr(self, i: int, lrs: Sequence[Tensor], step: int) -> Tensor | float:
        spec = self.lr_of[i]
        return step_lr(lrs[spec] if isinstance(spec, int) else spec, step, self.per_step)

    def lr_grad(self, lr: Tensor, contribution: Tensor, step: int) -> Tensor:
        """``contribution`` (d loss / d (the rate used at ``step``), elementwise) added into ``lr``'s shape."""
        if self.per_step:
            index = min(step, lr.shape[0] - 1)
            return torch.zeros_like(lr).index_fill(0, torch.tensor([index], device=lr.device), contribution.sum())
        return contribution.sum() if lr.dim() == 0 else contribution


class _RecomputedSGD(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, loop: _Loop, *inputs: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        k, m = len(loop.names), len(loop.context_names)
        theta = [t.detach() for t in inputs[:k]]
        context = [t.detach() for t in inputs[k : k + m]]
        lrs = [t.detach() for t in inputs[k + m :]]
        updated = [False] * k
        trajectory, states, kept = [], [], None
        for step in range(loop.steps):
            states.append(_StepState.capture())  # RNG (dropout) and autocast, for the recomputation
            trajectory.append(theta)
            # The last step's graph is built right away and kept for the backward, which saves
            # recomputing it; it dies when the backward is done with it.
            keep = step == loop.steps - 1
            with torch.enable_grad():
                leaves = [x.detach().requires_grad_() for x in theta]
                cvars = [c.detach().requires_grad_(keep) for c in context]
                loss = loop.loss_fn(loop.params(leaves, cvars))
                grads = torch.autograd.grad(loss, leaves, create_graph=keep, allow_unused=True)
            loop.losses.append(loss.detach())
            theta = [
                t if g is None else t - loop.lr(i, lrs, step) * g.detach() for i, (t, g) in enumerate(zip(theta, grads))
            ]
            updated = [u or g is not None for u, g in zip(updated, grads)]
            if keep:
                kept = (leaves, cvars, grads)
            del loss, grads, leaves, cvars  # free this step's graph (unless kept) before the next one
        ctx.loop, ctx.trajectory, ctx.states, ctx.kept = loop, trajectory, states, kept
        ctx.context, ctx.lrs = context, lrs
        return tuple(t if u else t.clone() for t, u in zip(theta, updated))  # outputs must be new tensors

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grad_theta: Tensor) -> tuple[Tensor | None, ...]:
        loop: _Loop = ctx.loop
        k = len(loop.names)
        context, lrs = ctx.context, ctx.lrs
        g = list(grad_theta)  # materialised: zeros for outputs the outer loss did not use
        g_context = [torch.zeros_like(c) for c in context]
        g_lrs = [torch.zeros_like(lr) for lr in lrs]

        def back_through(theta: list[Tensor], cvars: list[Tensor], grads: Sequence[Tensor | None], step: int) -> None:
            nonlocal g, g_context
            used = [i for i, gr in enumerate(grads) if gr is not None]
            if not used:
                return
            outs = torch.autograd.grad(
                [grads[i] for i in used],
                theta + cvars,
                grad_outputs=[-loop.lr(i, lrs, step) * g[i] for i in used],
                allow_unused=True,
            )
            for i in used:
                spec = loop.lr_of[i]
                if isinstance(spec, int):
                    g_lrs[spec] = g_lrs[spec] - loop.lr_grad(lrs[spec], g[i] * grads[i].detach(), step)
            g = [gi if o is None else gi + o for gi, o in zip(g, outs[:k])]
            g_context = [gc if o is None else gc + o for gc, o in zip(g_context, outs[k:])]

        for t in reversed(range(loop.steps)):
            if ctx.kept is not None:  # the last step, built in the forward
                kept, ctx.kept = ctx.kept, None
                with torch.enable_grad():
                    back_through(*kept, t)
                del kept
                continue
            with ctx.states[t].restored():
                theta = [x.detach().requires_grad_() for x in ctx.trajectory[t]]
                cvars = [c.detach().requires_grad_() for c in context]
                loss = loop.loss_fn(loop.params(theta, cvars))
                grads = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True)
                back_through(theta, cvars, grads, t)
                del loss, grads, theta, cvars  # one step's double-backward graph alive at a time
        ctx.trajectory = ctx.states = None
        return (None, *g, *g_context, *g_lrs)


def recomputed_sgd_loop(
    loss_fn: Callable[[Params], Tensor],
    params: Mapping[str, Tensor],
    names: Sequence[str],
    *,
    steps: int,
    lrs: Mapping[str, Tensor | float],
    per_step_lrs: bool = False,
) -> tuple[Params, list[Tensor]]:
    """Second-order ``sgd_inner_loop`` whose backward recomputes each step (see the module docstring).

    Every differentiable input of ``loss_fn`` must come through ``params`` (or ``lrs``): a tensor
    that requires grad and is only captured by the closure would get no meta-gradient.

    Returns:
        The adapted params dict and the detached support losses before each step.
    """
    names = list(names)
    chosen = set(names)
    context_names = [n for n, v in params.items() if n not in chosen and v.requires_grad]
    base = {n: v for n, v in params.items() if n not in chosen and not v.requires_grad}
    lr_inputs: list[Tensor] = []
    lr_of: list[int | float | Tensor] = []
    for n in names:
        lr = lrs[n]
        if isinstance(lr, Tensor) and lr.requires_grad:
            lr_of.append(len(lr_inputs))
            lr_inputs.append(lr)
        else:  # a constant: a float, or a tensor of rates (per step, per weight) nobody differentiates
            lr_of.append(lr.detach() if isinstance(lr, Tensor) else float(lr))
    loop = _Loop(loss_fn, base, names, context_names, steps, lr_of, per_step_lrs)
    inputs = [params[n] for n in names] + [params[n] for n in context_names] + lr_inputs
    adapted = _RecomputedSGD.apply(loop, *inputs)
    fast: Params = dict(params)
    fast.update(zip(names, adapted))
    return fast, loop.losses
