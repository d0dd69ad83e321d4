"""Meta-gradients: finite differences (2nd order), FOMAML semantics, frozen backbone, heads, eager."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from toy_task import randomize_adapters, toy_encoder, toy_episode, toy_meta_model

from xmeta.meta import (
    MetaConfig,
    MetaModel,
    adapt_episode,
    encoder_config_for,
    episode_logits,
    meta_step_loss,
    tokenize_episode,
)
from xmeta.meta.functional import encoder_features
from xmeta.models.heads import PrototypeHead, proto_logits, prototypes

_model = toy_meta_model  # eager when second order; non-zero LoRA B (A gets a first-step gradient)


def _meta_grad(model: MetaModel, ep, cfg: MetaConfig | None = None) -> dict[str, torch.Tensor]:
    params = model.meta_params()
    loss, _ = meta_step_loss(model, params, ep, cfg)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(params.items(), grads)}


SECOND_ORDER = [
    {"algorithm": "maml", "inner_steps": 2, "inner_lr": 2.0},
    {"algorithm": "maml", "inner_steps": 2, "inner_lr": 1.0, "head": "linear_zero", "inner_params": r"lora_B|episode"},
    {"algorithm": "protomaml", "first_order": False, "inner_steps": 2, "inner_lr": 1.0},
    {
        "algorithm": "maml",
        "inner_steps": 2,
        "inner_lr": 0.3,
        "projection_dim": 8,
        "learn_inner_lr": True,
        "learn_temperature": True,
        "temperature": 0.5,
        "distance": "cosine",
    },
    # MAML++'s per-tensor, per-step learned rates (LSLR) and Meta-SGD's per-weight rates
    {"algorithm": "maml", "inner_steps": 3, "inner_lr": 0.5, "learn_inner_lr": True, "inner_lr_shape": "tensor_step"},
    {"algorithm": "maml", "inner_steps": 2, "inner_lr": 0.5, "learn_inner_lr": True, "inner_lr_shape": "element"},
    # ProtoMAML as published: LoRA and the prototype-initialised linear head adapt together
    {"algorithm": "protomaml", "first_order": False, "inner_steps": 2, "inner_lr": 0.5, "inner_params": "all"},
]


@pytest.mark.parametrize("cfg", SECOND_ORDER, ids=lambda c: "-".join(f"{v}" for v in c.values())[:60])
def test_second_order_meta_gradient_matches_finite_differences(cfg: dict) -> None:
    model = _model(**cfg)
    ep = tokenize_episode(model.encoder, toy_episode(0))
    grads = _meta_grad(model, ep)
    base = model.detached_params()

    def loss_at(delta: dict[str, torch.Tensor], eps: float) -> float:
        shifted = {n: p + eps * delta[n] for n, p in base.items()}
        return float(meta_step_loss(model, shifted, ep)[0].detach())

    gen = torch.Generator().manual_seed(7)
    for _ in range(3):  # random directions cover every tensor at once
        v = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in base.items()}
        eps = 1e-5
        fd = (loss_at(v, eps) - loss_at(v, -eps)) / (2 * eps)
        analytic = sum(float((grads[n] * v[n]).sum()) for n in base)
        assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9)
    # and element-wise on a few entries of a lora_A tensor (zero gradient under B = 0)
    name = next(n for n in base if "lora_A" in n)
    for idx in [(0, 0), (1, 3)]:
        e = {n: torch.zeros_like(p) for n, p in base.items()}
        e[name][idx] = 1.0
        fd = (loss_at(e, 1e-5) - loss_at(e, -1e-5)) / 2e-5
        assert float(grads[name][idx]) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_first_order_is_the_query_gradient_at_the_adapted_params() -> None:
    model = _model(algorithm="fomaml", inner_steps=2, inner_lr=0.5)
    ep = tokenize_episode(model.encoder, toy_episode(1))
    fo = _meta_grad(model, ep)
    state = adapt_episode(model, model.detached_params(), ep.support, ep.support_labels, ep.n_way)
    adapted = {n: state.params[n].detach().requires_grad_() for n in model.meta_params()}
    state.params.update(adapted)
    state.head = PrototypeHead(
        {"prototypes": prototypes(encoder_features(model, adapted, ep.support), ep.support_labels, ep.n_way)}
    )  # recomputed at the adapted params, as the outer loss does
    loss = torch.nn.functional.cross_entropy(episode_logits(model, state, ep.query), ep.query_labels)
    direct = torch.autograd.grad(loss, list(adapted.values()))
    for (n, _), g in zip(adapted.items(), direct):
        torch.testing.assert_close(fo[n], g)


def test_first_order_differs_from_second_order_but_agrees_roughly() -> None:
    model = _model(algorithm="maml", inner_steps=2, inner_lr=2.0)
    ep = tokenize_episode(model.encoder, toy_episode(2))
    so = torch.cat([g.flatten() for g in _meta_grad(model, ep).values()])
    fo_cfg = dataclasses.replace(model.cfg, algorithm="fomaml")
    fo = torch.cat([g.flatten() for g in _meta_grad(model, ep, fo_cfg).values()])
    assert float((so - fo).norm() / so.norm()) > 0.01  # the second-order term is really there ...
    assert float(so @ fo / (so.norm() * fo.norm())) > 0.9  # ... yet FOMAML points the same way
    assert 0.5 < float(fo.norm() / so.norm()) < 2.0


@pytest.mark.parametrize("algorithm", ["protonet", "fomaml", "maml", "protomaml"])
def test_frozen_backbone_untouched_by_a_meta_step(algorithm: str) -> None:
    model = _model(algorithm=algorithm, inner_steps=2, inner_lr=0.3, projection_dim=8)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    frozen_buffers = {n: b.clone() for n, b in model.named_buffers()}
    before = {n: p.detach().clone() for n, p in model.meta_params().items()}
    opt = torch.optim.Adam(model.meta_params().values(), lr=1e-2)
    for ep in (toy_episode(0), toy_episode(1)):  # the recipe's meta-batch: backward of each loss / B
        loss, _ = meta_step_loss(model, model.meta_params(), ep)
        assert torch.isfinite(loss)
        (loss / 2).backward()
    opt.step()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n
            assert torch.equal(p, frozen[n]), n
    for n, b in model.named_buffers():
        assert torch.equal(b, frozen_buffers[n]), n
    assert all(not torch.equal(p, before[n]) for n, p in model.meta_params().items())


def test_per_episode_backward_equals_the_meta_batch_gradient() -> None:
    """The recipe backpropagates each episode's loss / B (one graph alive at a time): the mean's gradient."""
    model = _model(algorithm="protomaml", inner_steps=1, inner_lr=0.3)
    episodes = [tokenize_episode(model.encoder, toy_episode(i)) for i in range(2)]
    params = model.meta_params()
    mean = torch.stack([meta_step_loss(model, params, ep)[0] for ep in episodes]).mean()
    ref = torch.autograd.grad(mean, list(params.values()))
    for ep in episodes:
        (meta_step_loss(model, params, ep)[0] / len(episodes)).backward()
    for g, p in zip(ref, params.values()):
        torch.testing.assert_close(p.grad, g)


def test_protonet_logits_equal_a_direct_computation() -> None:
    model = _model(algorithm="protonet")
    ep = tokenize_episode(model.encoder, toy_episode(3))
    state = adapt_episode(model, model.detached_params(), ep.support, ep.support_labels, ep.n_way)
    enc = model.encoder
    zs, zq = enc(**ep.support), enc(**ep.query)
    protos = torch.stack([zs[ep.support_labels == k].mean(0) for k in range(ep.n_way)])
    direct = -((zq[:, None, :] - protos[None]) ** 2).sum(-1)
    torch.testing.assert_close(episode_logits(model, state, ep.query), direct)
    torch.testing.assert_close(direct, proto_logits(zq, protos))


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_protomaml_head_starts_as_the_prototype_classifier(distance: str) -> None:
    model = _model(algorithm="protomaml", distance=distance, temperature=0.5, projection_dim=8)
    ep = tokenize_episode(model.encoder, toy_episode(4))
    params = model.detached_params()
    lin = adapt_episode(model, params, ep.support, ep.support_labels, ep.n_way, steps=0)
    proto_cfg = dataclasses.replace(model.cfg, algorithm="protonet")
    proto = adapt_episode(model, params, ep.support, ep.support_labels, ep.n_way, proto_cfg)
    p_lin = episode_logits(model, lin, ep.query).softmax(-1)
    p_proto = episode_logits(model, proto, ep.query).softmax(-1)  # each state carries its head
    torch.testing.assert_close(p_lin, p_proto)
    assert torch.equal(p_lin.argmax(-1), p_proto.argmax(-1))


def test_second_order_needs_an_eager_encoder_and_avoids_cdist(monkeypatch: pytest.MonkeyPatch) -> None:
    enc = toy_encoder()
    assert enc.attn_implementation == "sdpa"
    first = MetaModel(enc, MetaConfig(algorithm="fomaml"))
    assert enc.attn_implementation == "sdpa"  # first order keeps the fast kernel
    second = MetaConfig(algorithm="maml", inner_steps=1)
    sdpa_model = MetaModel(enc, second)  # fine for adapting and predicting (first order) ...
    assert enc.attn_implementation == "sdpa"  # ... and the encoder it was handed is never reconfigured
    with pytest.raises(ValueError, match="eager attention"):  # meta-training it is a clear error
        meta_step_loss(sdpa_model, sdpa_model.meta_params(), toy_episode(0))
    with pytest.raises(ValueError, match="eager attention"):  # also for a config passed at call time
        meta_step_loss(first, first.meta_params(), toy_episode(0), second)
    assert encoder_config_for(enc.cfg, first.cfg) is enc.cfg
    eager = toy_encoder(encoder_config_for(enc.cfg, second))  # chosen where the encoder is built
    assert eager.attn_implementation == "eager" and eager.supports_double_backward
    model = MetaModel(eager, second)
    monkeypatch.setattr(torch, "cdist", lambda *a, **k: (_ for _ in ()).throw(AssertionError("cdist")))
    loss, _ = meta_step_loss(model, model.meta_params(), toy_episode(0))
    loss.backward()
    assert eager.attn_implementation == "eager"


def test_cached_frozen_layers_give_the_same_loss_and_meta_gradient() -> None:
    meta = MetaConfig(algorithm="maml", inner_steps=2, inner_lr=1.0)
    cfg = dataclasses.replace(toy_encoder().cfg, lora_top_layers=1)
    enc = toy_encoder(encoder_config_for(cfg, meta))
    randomize_adapters(enc, seed=4)
    model = MetaModel(enc, meta)
    full = tokenize_episode(enc, toy_episode(6))
    cached = tokenize_episode(enc, toy_episode(6), cache_frozen=True)
    assert "hidden_states" in cached.support and cached.support["start_layer"] == 1
    g_full, g_cached = _meta_grad(model, full), _meta_grad(model, cached)
    for n in g_full:
        torch.testing.assert_close(g_cached[n], g_full[n])
