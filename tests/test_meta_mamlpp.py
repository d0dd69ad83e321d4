"""MAML++ options (Antoniou et al., 2019): multi-step loss, derivative-order annealing, learned
per-step and per-weight inner learning rates; the protomaml inner loop over LoRA + head."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from toy_task import toy_episode, toy_meta_model

from xmeta.meta import (
    MetaConfig,
    MetaModel,
    adapt_episode,
    episode_logits,
    meta_step_loss,
    tokenize_episode,
)

_model = toy_meta_model  # eager when second order; non-zero LoRA B (A gets a first-step gradient)


def _grads(model: MetaModel, ep, cfg: MetaConfig | None = None, step: int | None = None) -> dict[str, torch.Tensor]:
    params = model.meta_params()
    loss, _ = meta_step_loss(model, params, ep, cfg, step=step)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(params.items(), grads)}


@pytest.mark.parametrize("steps", [2, 3, 5])
def test_multi_step_loss_weights_sum_to_one_and_anneal_to_the_last_step(steps: int) -> None:
    cfg = MetaConfig(algorithm="maml", inner_steps=steps, multi_step_loss_steps=100)
    first = cfg.multi_step_loss_weights(0)
    assert first == pytest.approx([1 / steps] * steps)  # uniform at the start
    previous = first
    for step in range(1, 100):
        w = cfg.multi_step_loss_weights(step)
        assert len(w) == steps and sum(w) == pytest.approx(1.0, abs=1e-12)
        assert all(x >= 0.03 / steps - 1e-12 for x in w[:-1])  # MAML++'s floor
        assert w[-1] >= previous[-1] and all(a <= b for a, b in zip(w[:-1], previous[:-1]))
        previous = w
    assert previous[-1] > 0.9
    assert cfg.multi_step_loss_weights(100) is None  # then the last step's loss alone
    assert cfg.multi_step_loss_weights(None) is None  # and never at evaluation
    assert MetaConfig(algorithm="maml", inner_steps=steps).multi_step_loss_weights(0) is None  # off by default


def test_multi_step_loss_is_the_weighted_sum_of_the_query_losses_after_each_step() -> None:
    model = _model(algorithm="fomaml", inner_steps=3, inner_lr=0.5, multi_step_loss_steps=10)
    ep = tokenize_episode(model.encoder, toy_episode(0))
    params = model.detached_params()
    loss, metrics = meta_step_loss(model, params, ep, step=4)
    expected = 0.0
    for s, w in zip(range(1, 4), model.cfg.multi_step_loss_weights(4)):
        state = adapt_episode(model, params, ep.support, ep.support_labels, ep.n_way, steps=s)
        expected += w * float(F.cross_entropy(episode_logits(model, state, ep.query), ep.query_labels).detach())
    assert float(loss) == pytest.approx(expected, rel=1e-10)
    # after the horizon: the usual last-step loss
    plain, _ = meta_step_loss(model, params, ep)
    assert float(meta_step_loss(model, params, ep, step=10)[0]) == pytest.approx(float(plain), rel=1e-12)


def test_second_order_multi_step_loss_matches_finite_differences() -> None:
    model = _model(algorithm="maml", inner_steps=2, inner_lr=1.0, multi_step_loss_steps=10, learn_inner_lr=True)
    ep = tokenize_episode(model.encoder, toy_episode(1))
    grads = _grads(model, ep, step=3)
    base = model.detached_params()
    gen = torch.Generator().manual_seed(5)
    for _ in range(2):
        v = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in base.items()}

        def at(eps: float, v: dict = v) -> float:
            return float(meta_step_loss(model, {n: p + eps * v[n] for n, p in base.items()}, ep, step=3)[0])

        fd = (at(1e-5) - at(-1e-5)) / 2e-5
        assert sum(float((grads[n] * v[n]).sum()) for n in base) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_first_order_until_uses_the_first_order_gradient_then_the_second_order_one() -> None:
    model = _model(algorithm="maml", inner_steps=2, inner_lr=2.0, first_order_until=50)
    ep = tokenize_episode(model.encoder, toy_episode(2))
    fomaml = dataclasses.replace(model.cfg, algorithm="fomaml", first_order_until=0)
    maml = dataclasses.replace(model.cfg, first_order_until=0)
    early, late = _grads(model, ep, step=49), _grads(model, ep, step=50)
    fo, so = _grads(model, ep, fomaml), _grads(model, ep, maml)
    for n in fo:
        torch.testing.assert_close(early[n], fo[n], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(late[n], so[n], rtol=1e-12, atol=1e-14)
    assert any(not torch.allclose(fo[n], so[n]) for n in fo)


@pytest.mark.parametrize("shape", ["tensor", "tensor_step", "element"])
@pytest.mark.parametrize("algorithm", ["fomaml", "maml"])
def test_learned_inner_learning_rates_receive_gradients(shape: str, algorithm: str) -> None:
    model = _model(algorithm=algorithm, inner_steps=3, inner_lr=0.3, learn_inner_lr=True, inner_lr_shape=shape)
    lrs = {n: p for n, p in model.meta_params().items() if n.startswith("inner_lrs.")}
    assert len(lrs) == len(model.inner_param_names())
    params = dict(model.named_parameters())
    for n, lr in lrs.items():
        name = n.removeprefix("inner_lrs.").replace("__", ".")
        want = {"tensor": (), "tensor_step": (3,), "element": tuple(params[name].shape)}[shape]
        assert tuple(lr.shape) == want and torch.all(lr == 0.3)
    grads = _grads(model, tokenize_episode(model.encoder, toy_episode(3)))
    moved = [n for n in lrs if float(grads[n].abs().max()) > 0]
    assert len(moved) == len(lrs), sorted(set(lrs) - set(moved))
    if shape == "tensor_step":  # each step's rate gets its own gradient
        assert all(bool((grads[n] != 0).all()) for n in lrs)


def test_per_step_rates_are_used_step_by_step() -> None:
    """Rates (a, b) per step equal two plain SGD steps at a then b; extra evaluation steps reuse the last rate."""
    model = _model(algorithm="fomaml", inner_steps=2, inner_lr=0.3, learn_inner_lr=True, inner_lr_shape="tensor_step")
    with torch.no_grad():
        for p in model.inner_lrs.values():
            p.copy_(torch.tensor([0.7, 0.2], dtype=p.dtype))
    ep = tokenize_episode(model.encoder, toy_episode(4))
    params = model.detached_params()
    names = model.inner_param_names()
    state = adapt_episode(model, params, ep.support, ep.support_labels, ep.n_way, steps=3, first_order=True)
    manual = dict(params)
    for lr in (0.7, 0.2, 0.2):
        fixed = dataclasses.replace(model.cfg, learn_inner_lr=False, inner_lr_shape="tensor", inner_lr=lr)
        manual = adapt_episode(model, manual, ep.support, ep.support_labels, ep.n_way, fixed, steps=1).params
    for n in names:
        torch.testing.assert_close(state.params[n], manual[n], rtol=1e-10, atol=1e-12)


def test_protomaml_adapts_lora_and_the_head_unless_told_head_only() -> None:
    full = _model(algorithm="protomaml", inner_params="all")
    names = full.inner_param_names()
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    assert {"episode_head.weight", "episode_head.bias"} <= set(names)
    anil = _model(algorithm="protomaml", inner_params="head")
    assert not any(n.startswith("encoder.") for n in anil.inner_param_names())


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"inner_lr_shape": "tensor_step"}, "set learn_inner_lr: true"),
        ({"inner_lr_shape": "layer", "learn_inner_lr": True}, "inner_lr_shape must be"),
        ({"multi_step_loss_steps": -1}, "must be >= 0"),
        ({"algorithm": "protonet", "multi_step_loss_steps": 10}, "needs an inner loop"),
        ({"algorithm": "fomaml", "first_order_until": 10}, "this one is first order"),
    ],
)
def test_bad_mamlpp_settings_are_refused(cfg: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MetaConfig(**{"algorithm": "maml", **cfg})
