"""Test-time options: support-set fine-tuning (P>M>F) and transductive soft k-means (Ren et al.)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from toy_task import randomize_adapters, toy_encoder, toy_episode

from xmeta.bench.methods import METHODS
from xmeta.meta import MetaConfig, MetaLearner, MetaModel
from xmeta.meta.functional import encoder_features, project
from xmeta.meta.test_time import FineTuneLearner, SoftKMeansLearner
from xmeta.models.heads import prototypes

EP = toy_episode(7, n_way=4, k_shot=3, q_query=4)
QUERY = [e.text for e in EP.query]


def _model(**cfg: object) -> MetaModel:
    enc = toy_encoder()
    randomize_adapters(enc, std=0.2, seed=2)
    return MetaModel(enc, MetaConfig(**{"algorithm": "protonet", "projection_dim": 8, **cfg}))


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_zero_fine_tuning_steps_is_the_runs_prototype_classifier(distance: str) -> None:
    model = _model(distance=distance)
    plain = MetaLearner(model).adapt(EP.support).predict(QUERY).probs
    tuned = FineTuneLearner(model, steps=0).adapt(EP.support).predict(QUERY).probs
    np.testing.assert_allclose(tuned, plain, rtol=1e-9, atol=1e-12)


def test_fine_tuning_lowers_the_support_loss_and_leaves_the_run_untouched() -> None:
    model = _model()
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    learner = FineTuneLearner(model, steps=5, lr=0.5)
    state = learner.adapt_state(EP.support)
    assert len(state.support_losses) == 5 and float(state.support_losses[-1]) < float(state.support_losses[0])
    adapted = [n for n in state.params if "lora" in n and not torch.equal(state.params[n], before[n])]
    assert adapted  # the LoRA tensors moved, in the adapted copy only
    for n, t in model.state_dict().items():
        assert torch.equal(t, before[n]), n
    probs = learner.adapt(EP.support).predict(QUERY).probs
    assert not np.allclose(probs, MetaLearner(model).adapt(EP.support).predict(QUERY).probs)
    with pytest.raises(ValueError, match="steps >= 0 and lr > 0"):
        FineTuneLearner(model, steps=3, lr=0.0)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_soft_kmeans_is_ren_et_als_refinement(distance: str) -> None:
    model = _model(distance=distance, temperature=0.5)
    pred = SoftKMeansLearner(model, steps=2).adapt(EP.support).predict(QUERY)
    # reference: the same maths written out on the run's embeddings
    params = model.detached_params()
    with torch.no_grad():

        def embed(texts: list[str]) -> torch.Tensor:
            batch = model.encoder.tokenize(texts)
            return project(model, params, encoder_features(model, params, batch))

        zs, zq = embed([e.text for e in EP.support]), embed(QUERY)
        labels = torch.tensor([e.label for e in EP.support])
        protos = prototypes(zs, labels, 4)
        scale = 2.0
        for _ in range(2):
            if distance == "cosine":
                logits = scale * F.normalize(zq, dim=-1) @ F.normalize(protos, dim=-1).T
            else:
                logits = -scale * torch.cdist(zq, protos).pow(2)
            w = logits.softmax(-1)
            onehot = F.one_hot(labels, 4).to(zs.dtype)
            protos = (onehot.T @ zs + w.T @ zq) / (onehot.sum(0) + w.sum(0)).unsqueeze(1)
        if distance == "cosine":
            final = scale * F.normalize(zq, dim=-1) @ F.normalize(protos, dim=-1).T
        else:
            final = -scale * torch.cdist(zq, protos).pow(2)
    np.testing.assert_allclose(pred.probs, final.double().softmax(-1).numpy(), rtol=1e-6, atol=1e-9)
    inductive = MetaLearner(model).adapt(EP.support).predict(QUERY).probs
    assert not np.allclose(pred.probs, inductive)  # the queries really moved the prototypes


def test_soft_kmeans_refuses_a_linear_head_and_both_kinds_are_registered() -> None:
    with pytest.raises(ValueError, match="needs a prototype head"):
        SoftKMeansLearner(_model(algorithm="protomaml", inner_steps=1))
    assert {"meta-ft", "meta-softkm"} <= set(METHODS.names())
    assert "TRANSDUCTIVE" in METHODS.get("meta-softkm").help
