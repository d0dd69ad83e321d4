"""Frozen weights cast once under autocast (``xmeta.meta.precision.autocast_frozen_weights``): the
same bits as autocast's per-call casts in prediction, meta-training (values and gradients) and the
activation-cache fill; copies made once and redone when a weight changes in place."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from toy_task import randomize_adapters, toy_encoder, toy_episode

import xmeta.meta.cache as cache_module
import xmeta.meta.functional as functional
from xmeta.meta import MetaConfig, MetaModel, encoder_config_for, meta_step_loss, tokenize_episode
from xmeta.meta.cache import ActivationCache
from xmeta.meta.precision import autocast_frozen_weights

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _model(**meta: object) -> MetaModel:
    cfg = MetaConfig(**meta)
    base = dataclasses.replace(toy_encoder().cfg, dtype="float32", lora_top_layers=1)
    enc = toy_encoder(encoder_config_for(base, cfg), hidden=32, layers=3)
    randomize_adapters(enc, std=0.2, seed=1)
    return MetaModel(enc, cfg)


def _no_casts(module, params):  # autocast's own per-call casts: the reference
    return {}


def test_copies_are_made_once_for_frozen_linear_weights_only() -> None:
    enc = _model().encoder
    assert autocast_frozen_weights(enc, {}) == {}  # no autocast: nothing to cast
    with torch.autocast(**BF16):
        first = autocast_frozen_weights(enc, {})
        again = autocast_frozen_weights(enc, {})
    params = dict(enc.named_parameters())
    linear = {f"{path}.{leaf}" for path, m in enc.named_modules() if isinstance(m, torch.nn.Linear)
              for leaf, _ in m.named_parameters(recurse=False)}  # fmt: skip
    assert set(first) == {n for n in linear if not params[n].requires_grad}
    assert not any("lora_" in n for n in first) and any("lora_" in n for n in linear)  # trainable: left to autocast
    assert all(t.dtype == torch.bfloat16 for t in first.values())
    assert all(again[n] is first[n] for n in first)  # cached, not recast
    name = next(iter(first))
    with torch.no_grad():
        params[name].mul_(2.0)  # an in-place change (load_state_dict does this): the copy is redone
    with torch.autocast(**BF16):
        redone = autocast_frozen_weights(enc, {})
        skipped = autocast_frozen_weights(enc, {name: params[name]})
    assert torch.equal(redone[name], params[name].detach().to(torch.bfloat16)) and redone[name] is not first[name]
    assert name not in skipped  # a name the caller passes is the caller's
    params[name].data = params[name].data.clone()  # new storage (as ``.to(device)`` gives): recast
    with torch.autocast(**BF16):
        moved = autocast_frozen_weights(enc, {})
    assert moved[name] is not redone[name] and torch.equal(moved[name], redone[name])


@pytest.mark.parametrize("algorithm", ["protonet", "fomaml"])
def test_training_step_is_bitwise_the_same(algorithm: str, monkeypatch) -> None:
    model = _model(algorithm=algorithm, inner_steps=2, inner_params="all")
    batch = tokenize_episode(model.encoder, toy_episode(0, n_way=3, k_shot=3, q_query=2))
    results = []
    for casts in (_no_casts, autocast_frozen_weights):
        monkeypatch.setattr(functional, "autocast_frozen_weights", casts)
        params = model.meta_params()
        with torch.autocast(**BF16):
            loss, _ = meta_step_loss(model, params, batch)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        assert (a is None and b is None) or torch.equal(a, b)


def test_cache_fill_is_bitwise_the_same(monkeypatch) -> None:
    enc = _model().encoder
    examples = [e for i in range(4) for e in (*toy_episode(i).support, *toy_episode(i).query)]
    rows = []
    for casts in (_no_casts, autocast_frozen_weights):
        monkeypatch.setattr(cache_module, "autocast_frozen_weights", casts)
        cache = ActivationCache(enc, dtype=torch.float32, fill_batch_tokens=64)
        with torch.autocast(**BF16):
            cache.fill(examples)
        rows.append([cache.batch([e], fill=False)["hidden_states"] for e in examples])
    assert all(torch.equal(a, b) for a, b in zip(*rows))


def test_prediction_is_bitwise_the_same(monkeypatch) -> None:
    from xmeta.meta.learners import MetaLearner

    model = _model(algorithm="protonet")
    ep = toy_episode(1, n_way=3, k_shot=3, q_query=4)
    texts = [e.text for e in ep.query]
    logits = []
    for casts in (_no_casts, autocast_frozen_weights):
        monkeypatch.setattr(functional, "autocast_frozen_weights", casts)
        logits.append(MetaLearner(model, precision="bf16").adapt(ep.support).logits(texts))
    assert torch.equal(*logits)
