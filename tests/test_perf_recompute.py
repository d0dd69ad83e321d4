"""Lean second order: the recomputing inner loop gives the plain loop's meta-gradient with less memory."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from toy_task import randomize_adapters, toy_encoder, toy_episode

from xmeta.meta import ActivationCache, MetaConfig, MetaModel, encoder_config_for, meta_step_loss, tokenize_episode
from xmeta.models.encoder import EncoderConfig

TINY = EncoderConfig(model="tiny", text_prefix="", lora_r=2, lora_alpha=2.0, dtype="float64")

CONFIGS = [
    {"algorithm": "maml", "inner_steps": 3, "inner_lr": 1.0},
    {"algorithm": "protomaml", "first_order": False, "inner_steps": 2, "inner_lr": 0.5},
    {"algorithm": "maml", "inner_steps": 2, "inner_lr": 1.0, "head": "linear_zero", "inner_params": r"lora_B|episode"},
    {"algorithm": "maml", "inner_steps": 2, "inner_lr": 0.3, "inner_params": "top:1", "projection_dim": 8,
     "learn_inner_lr": True, "learn_temperature": True, "temperature": 0.5, "distance": "cosine"},
    {"algorithm": "maml", "inner_steps": 3, "inner_lr": 0.5, "learn_inner_lr": True, "inner_lr_shape": "tensor_step"},
    {"algorithm": "maml", "inner_steps": 2, "inner_lr": 0.5, "learn_inner_lr": True, "inner_lr_shape": "element",
     "projection_dim": 8},
]  # fmt: skip


def _model(cfg: dict, dropout: float = 0.0) -> MetaModel:
    meta = MetaConfig(**cfg)
    enc = toy_encoder(encoder_config_for(TINY, meta), layers=2)  # second order: eager attention
    randomize_adapters(enc, std=0.2, seed=3)
    if dropout:
        for m in enc.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = dropout
    return MetaModel(enc, meta)


def _grads(model: MetaModel, batch, recompute: bool, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    cfg = dataclasses.replace(model.cfg, recompute_inner_steps=recompute)
    params = model.meta_params()
    torch.manual_seed(seed)
    loss, metrics = meta_step_loss(model, params, batch, cfg)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return torch.stack([loss.detach(), metrics["support_loss_last"]]), [
        torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), grads)
    ]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values())[:50])
def test_recomputed_loop_gives_the_plain_meta_gradient(cfg: dict) -> None:
    model = _model(cfg)
    batch = tokenize_episode(model.encoder, toy_episode(2))
    loss_plain, plain = _grads(model, batch, recompute=False)
    loss_lean, lean = _grads(model, batch, recompute=True)
    torch.testing.assert_close(loss_lean, loss_plain, rtol=1e-12, atol=1e-12)
    for a, b in zip(lean, plain):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert any(float(g.abs().sum()) > 0 for g in lean)


def test_recomputation_replays_dropout_exactly() -> None:
    model = _model(CONFIGS[0], dropout=0.2)
    model.train()
    cache = ActivationCache(model.encoder, dtype=torch.float64)
    batch = tokenize_episode(model.encoder, toy_episode(3), cache_frozen=cache)
    loss_plain, plain = _grads(model, batch, recompute=False, seed=11)
    loss_lean, lean = _grads(model, batch, recompute=True, seed=11)
    torch.testing.assert_close(loss_lean, loss_plain, rtol=1e-12, atol=1e-12)
    for a, b in zip(lean, plain):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    after_plain = (_grads(model, batch, False, seed=5), torch.rand(1))
    after_lean = (_grads(model, batch, True, seed=5), torch.rand(1))
    assert torch.equal(after_plain[1], after_lean[1])  # the caller's RNG stream moves on identically


def test_recomputed_meta_gradient_matches_finite_differences_on_packed_cached_inputs() -> None:
    model = _model(CONFIGS[1])
    batch = tokenize_episode(
        model.encoder, toy_episode(4), cache_frozen=ActivationCache(model.encoder, dtype=torch.float64)
    )
    _, grads = _grads(model, batch, recompute=True)
    base = model.detached_params()
    gen = torch.Generator().manual_seed(0)
    v = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in base.items()}

    def loss_at(eps: float) -> float:
        return float(meta_step_loss(model, {n: p + eps * v[n] for n, p in base.items()}, batch)[0])

    fd = (loss_at(1e-5) - loss_at(-1e-5)) / 2e-5
    analytic = sum(float((g * v[n]).sum()) for g, n in zip(grads, base))
    assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9)


class _Held:
    """What a saved-tensor hook hands autograd: alive exactly as long as the graph keeps it."""

    def __init__(self, t: torch.Tensor, live: list[int]) -> None:
        self.t, self.nbytes, self.live = t, t.numel() * t.element_size(), live
        live[0] += self.nbytes

    def __del__(self) -> None:
        self.live[0] -= self.nbytes


def _saved_bytes(model: MetaModel, batch, recompute: bool) -> int:
    """Bytes autograd still holds for the backward once the forward of one episode is done."""
    cfg = dataclasses.replace(model.cfg, recompute_inner_steps=recompute)
    live = [0]
    with torch.autograd.graph.saved_tensors_hooks(lambda t: _Held(t, live), lambda h: h.t):
        loss, _ = meta_step_loss(model, model.meta_params(), batch, cfg)
    held = live[0]
    del loss
    return held


def test_recomputation_keeps_far_less_for_the_backward() -> None:
    model = _model({"algorithm": "maml", "inner_steps": 5, "inner_lr": 0.5})
    batch = tokenize_episode(model.encoder, toy_episode(5, k_shot=4, q_query=4))
    plain, lean = _saved_bytes(model, batch, False), _saved_bytes(model, batch, True)
    assert lean < 0.45 * plain, (lean, plain)  # 1 kept step (+ the outer pass) instead of 5


def test_recomputation_restores_autocast() -> None:
    model = _model(CONFIGS[0])
    model.encoder.to(torch.float32)
    model.to(torch.float32)
    batch = tokenize_episode(model.encoder, toy_episode(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_plain, plain = _grads(model, batch, recompute=False)
        loss_lean, lean = _grads(model, batch, recompute=True)
    torch.testing.assert_close(loss_lean, loss_plain)
    for a, b in zip(lean, plain):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-4)
