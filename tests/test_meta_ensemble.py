"""Prediction ensembles of meta-trained runs (``meta-ens``): probabilities averaged over members."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from toy_task import randomize_adapters, toy_encoder, toy_episode

from xmeta.artifacts.training_data import TrainingData
from xmeta.bench.methods import METHODS, MethodSpec, parse_method
from xmeta.bench.methods.meta import ensemble_members
from xmeta.config import ConfigError
from xmeta.interfaces import label_names_of
from xmeta.meta import MetaConfig, MetaLearner, MetaModel
from xmeta.meta.ensemble import EnsembleLearner, EnsemblePredictor

EP = toy_episode(7, n_way=4, k_shot=3, q_query=4)
QUERY = [e.text for e in EP.query]


def _learner(seed: int, **cfg: object) -> MetaLearner:
    enc = toy_encoder()
    randomize_adapters(enc, std=0.3, seed=seed)
    return MetaLearner(MetaModel(enc, MetaConfig(**{"algorithm": "protonet", "projection_dim": 8, **cfg})))


def test_the_ensemble_averages_its_members_probabilities() -> None:
    members = [_learner(1), _learner(2, distance="euclidean"), _learner(3, algorithm="protomaml", inner_steps=2)]
    alone = [m.adapt(EP.support, seed=5).predict(QUERY).probs for m in members]
    pred = EnsembleLearner(members).adapt(EP.support, seed=5).predict(QUERY)
    np.testing.assert_allclose(pred.probs, np.mean(alone, axis=0), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(pred.labels, np.mean(alone, axis=0).argmax(axis=1))
    assert pred.label_names == label_names_of(EP.support)
    assert not any(np.allclose(pred.probs, a, atol=1e-3) for a in alone)  # not one member's answer
    # a run with itself is that run
    same = EnsembleLearner([members[0], members[0]]).adapt(EP.support, seed=5).predict(QUERY)
    np.testing.assert_allclose(same.probs, alone[0], rtol=1e-12, atol=0)
    assert EnsembleLearner(members).adapt(EP.support).predict([]).probs.shape == (0, 4)


def test_an_ensemble_needs_two_members_that_agree_on_the_labels() -> None:
    with pytest.raises(ValueError, match="at least 2 members"):
        EnsembleLearner([_learner(1)])
    renamed = [dataclasses.replace(e, label_name=f"x{e.label_name}") for e in EP.support]
    a, b = _learner(1).adapt(EP.support), _learner(2).adapt(renamed)
    with pytest.raises(ValueError, match="disagree on the label names"):
        EnsemblePredictor([a, b])


def test_ensemble_spec_names_two_or_more_runs_and_the_training_data_is_the_union() -> None:
    spec = parse_method("meta-ens:default+runs/fomaml")
    assert spec.kind == "meta-ens" and ensemble_members(spec) == ["default", "runs/fomaml"]
    with pytest.raises(ConfigError, match=r"two or more runs joined by '\+'"):
        ensemble_members(MethodSpec("meta-ens:default", "meta-ens", "default"))
    a = TrainingData.from_records("sib200", [("sib200:eng_Latn:train:1", "s1"), ("sib200:eng_Latn:train:2", "s2")])
    b = TrainingData.from_records("sib200", [("sib200:eng_Latn:train:2", "s2"), ("sib200:fra_Latn:dev:7", "s7")])
    u = TrainingData.union([a, b])
    assert sorted(u.leakage_records()) == sorted({*a.leakage_records(), *b.leakage_records()})
    assert u.splits_by_lang == {"eng_Latn": ("train",), "fra_Latn": ("dev",)}
    old = TrainingData.from_summary({"task": "sib200", "splits_by_lang": {"deu_Latn": ["train"]}})
    mixed = TrainingData.union([a, old])  # an old member without ids: splits only, re-read by the benchmark
    assert not mixed.has_ids and mixed.splits_by_lang == {"deu_Latn": ("train",), "eng_Latn": ("train",)}
    with pytest.raises(ValueError, match="different tasks"):
        TrainingData.union([a, TrainingData("afrisenti", {"hau": ("train",)})])
    assert "meta-ens" in METHODS.names()
