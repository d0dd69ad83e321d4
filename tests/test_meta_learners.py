"""Learners (MetaLearner, FrozenProtoLearner, FinetuneLearner), checkpoints, toy meta-training."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from toy_task import randomize_adapters, toy_encoder, toy_episode

from xmeta.artifacts import MANIFEST
from xmeta.errors import InputError
from xmeta.interfaces import Learner, Predictor
from xmeta.meta import (
    FinetuneConfig,
    FinetuneLearner,
    FrozenProtoLearner,
    MetaConfig,
    MetaLearner,
    MetaModel,
    encoder_config_for,
    load_meta_model,
    meta_step_loss,
    save_meta_model,
    tokenize_episode,
)
from xmeta.meta.memo import TextMemo

EP = toy_episode(5, n_way=4, k_shot=3, q_query=4)
QUERY = [e.text for e in EP.query]


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in module.state_dict().items()}


def _assert_unchanged(module: torch.nn.Module, snap: dict[str, torch.Tensor]) -> None:
    for n, t in module.state_dict().items():
        assert torch.equal(t, snap[n]), n


@pytest.mark.parametrize("algorithm", ["protonet", "fomaml", "maml", "protomaml"])
def test_meta_learner_adapts_and_predicts(algorithm: str) -> None:
    enc = toy_encoder()
    randomize_adapters(enc, seed=1)
    model = MetaModel(enc, MetaConfig(algorithm=algorithm, inner_steps=2, inner_lr=0.5, projection_dim=8))
    learner = MetaLearner(model, batch_size=3)
    snap = _snapshot(model)
    assert isinstance(learner, Learner)
    predictor = learner.adapt(EP.support, seed=0)
    assert isinstance(predictor, Predictor)
    pred = predictor.predict(QUERY)
    _assert_unchanged(model, snap)
    assert pred.probs.shape == (len(QUERY), 4) and pred.label_names == EP.label_names
    np.testing.assert_allclose(pred.probs.sum(1), 1.0)
    assert (pred.labels == pred.probs.argmax(1)).all()
    np.testing.assert_allclose(MetaLearner(model, batch_size=64).adapt(EP.support).predict(QUERY).probs, pred.probs)
    assert predictor.predict([]).probs.shape == (0, 4)
    if algorithm != "protonet":  # the inner loop changes the adapted tensors
        state = learner.adapt_state(EP.support)
        changed = [n for n in model.inner_param_names() if n in model.meta_params()]
        assert any(not torch.equal(state.params[n], model.meta_params()[n]) for n in changed)


def test_frozen_proto_learner_is_the_untrained_protonet() -> None:
    enc = toy_encoder(dataclasses.replace(toy_encoder().cfg, lora_r=0))
    probs = FrozenProtoLearner(enc).adapt(EP.support).predict(QUERY).probs
    ref = MetaLearner(MetaModel(enc, MetaConfig(algorithm="protonet"))).adapt(EP.support).predict(QUERY).probs
    np.testing.assert_allclose(probs, ref)


def test_finetune_learner_trains_on_support_only() -> None:
    enc = toy_encoder()
    snap = _snapshot(enc)
    frozen = FrozenProtoLearner(enc).adapt(EP.support).predict(QUERY)
    step0 = FinetuneLearner(enc, FinetuneConfig(steps=0)).adapt(EP.support).predict(QUERY)
    np.testing.assert_allclose(step0.probs, frozen.probs, atol=1e-10)  # prototype-initialised head
    learner = FinetuneLearner(enc, FinetuneConfig(steps=15, lr=1e-2, head_lr=5e-2, batch_size=8))
    support_texts = [e.text for e in EP.support]
    support_labels = np.array([e.label for e in EP.support])

    def support_nll(pred) -> float:
        return float(-np.log(pred.probs[np.arange(len(support_labels)), support_labels]).mean())

    tuned = learner.adapt(EP.support, seed=3)
    untuned = FrozenProtoLearner(enc).adapt(EP.support)
    assert support_nll(tuned.predict(support_texts)) < support_nll(untuned.predict(support_texts))
    _assert_unchanged(enc, snap)
    again = learner.adapt(EP.support, seed=3).predict(QUERY).probs
    np.testing.assert_allclose(again, tuned.predict(QUERY).probs)  # same seed, same result


def test_save_load_round_trip(tmp_path) -> None:
    enc = toy_encoder()
    cfg = MetaConfig(algorithm="maml", inner_steps=1, projection_dim=6, learn_inner_lr=True, learn_temperature=True)
    model = MetaModel(enc, cfg)
    randomize_adapters(enc, seed=2)
    with torch.no_grad():
        for p in model.inner_lrs.values():
            p.fill_(0.37)
        model.head.log_scale.fill_(0.5)
    save_meta_model(model, tmp_path / "ckpt", step=12)
    meta = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())
    assert meta["kind"] == "meta" and meta["meta"]["algorithm"] == "maml" and meta["step"] == 12
    loaded = MetaLearner.load(tmp_path / "ckpt", encoder=toy_encoder())
    for n, t in model.meta_state_dict().items():
        assert torch.equal(loaded.model.meta_state_dict()[n], t), n
    np.testing.assert_allclose(
        loaded.adapt(EP.support).predict(QUERY).probs, MetaLearner(model).adapt(EP.support).predict(QUERY).probs
    )
    with pytest.raises(InputError, match="not found"):
        load_meta_model(tmp_path / "missing", encoder=toy_encoder())
    other = toy_encoder(dataclasses.replace(toy_encoder().cfg, lora_r=4))
    with pytest.raises(InputError, match="shape"):
        load_meta_model(tmp_path / "ckpt", encoder=other)


def _eval_loss(model: MetaModel, episodes: list) -> float:
    total = 0.0
    for ep in episodes:  # post-adaptation query loss; the outer graph is not needed here
        loss, _ = meta_step_loss(model, model.detached_params(), ep)
        total += float(loss.detach())
    return total / len(episodes)


@pytest.mark.parametrize("algorithm", ["protonet", "fomaml", "maml", "protomaml"])
def test_meta_training_lowers_post_adaptation_query_loss(algorithm: str) -> None:
    before, after = [], []
    for seed in range(3):
        cfg = MetaConfig(algorithm=algorithm, inner_steps=1, inner_lr=0.5, temperature=0.2, projection_dim=16)
        enc = toy_encoder(encoder_config_for(toy_encoder().cfg, cfg), seed=seed)  # eager if second order
        model = MetaModel(enc, cfg)
        val = [tokenize_episode(enc, toy_episode(i, seed=1000 + seed)) for i in range(4)]
        train = [tokenize_episode(enc, toy_episode(i, seed=seed)) for i in range(20)]
        before.append(_eval_loss(model, val))
        opt = torch.optim.Adam(model.meta_params().values(), lr=3e-2)
        for i in range(0, len(train), 2):
            opt.zero_grad()
            for ep in train[i : i + 2]:  # the recipe's meta-batch of 2: backward of each loss / 2
                (meta_step_loss(model, model.meta_params(), ep)[0] / 2).backward()
            opt.step()
        after.append(_eval_loss(model, val))
    assert np.mean(after) < np.mean(before) - 0.05, (before, after)


@pytest.mark.parametrize(
    ("meta_cfg", "memoised"),
    [
        (MetaConfig(algorithm="protonet"), True),
        (MetaConfig(algorithm="protomaml", inner_steps=2, inner_params="head"), True),
        (MetaConfig(algorithm="protomaml", inner_steps=2, inner_params="all"), False),
    ],
)
def test_feature_memo_gives_the_same_predictions(meta_cfg, memoised):
    enc = toy_encoder()
    randomize_adapters(enc, seed=3)
    model = MetaModel(enc, meta_cfg)
    learner = MetaLearner(model)
    assert (learner.memo is not None) == memoised
    ep = toy_episode(0, seed=5)
    texts = [q.text for q in ep.query]
    got = learner.adapt(ep.support, seed=1).predict(texts)
    learner.memo = None  # the uncached path
    ref = learner.adapt(ep.support, seed=1).predict(texts)
    np.testing.assert_allclose(got.probs, ref.probs, rtol=1e-9, atol=1e-12)


def test_text_memo_computes_each_text_once_by_length_and_stays_bounded() -> None:
    calls: list[list[str]] = []

    def compute(chunk: list[str]) -> list[int]:
        calls.append(chunk)
        return [len(t) for t in chunk]

    memo = TextMemo(batch_size=2, max_items=4)
    assert memo.lookup(["ccc", "a", "bb", "a"], compute) == [3, 1, 2, 1]
    assert calls == [["a", "bb"], ["ccc"]]  # distinct texts, shortest first, batch_size at a time
    assert memo.lookup(["bb", "ccc"], compute) == [2, 3] and len(calls) == 2  # all memoised
    memo.lookup(["dd", "eee"], compute)  # would exceed max_items: cleared, then only these computed
    assert calls[-1] == ["dd", "eee"] and memo.lookup(["a"], compute) == [1] and calls[-1] == ["a"]
