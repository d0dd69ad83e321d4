"""Slow: one real 7-way 5-shot 5-query SIB-200 episode per algorithm on multilingual-e5-small."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from xmeta.interfaces import Episode, Example
from xmeta.meta import ALGORITHMS, FrozenProtoLearner, MetaConfig, MetaLearner, MetaModel, meta_step_loss
from xmeta.models.encoder import Encoder, EncoderConfig

pytestmark = pytest.mark.slow


def sib_episode(path: Path, *, n_way: int = 7, k_shot: int = 5, q_query: int = 5, seed: int = 0) -> Episode:
    """An episode straight from a SIB-200 ``train.tsv`` (index_id, category, text)."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rng = random.Random(seed)
    by_cat: dict[str, list[dict]] = {}
    for r in rows:
        by_cat.setdefault(r["category"], []).append(r)
    cats = rng.sample(sorted(by_cat), n_way)
    lang = path.parent.name
    support, query = [], []
    for label, cat in enumerate(cats):
        picked = rng.sample(by_cat[cat], k_shot + q_query)
        ex = [Example(f"{lang}-{r['index_id']}", r["text"], label, cat, lang, r["index_id"]) for r in picked]
        support += ex[:k_shot]
        query += ex[k_shot:]
    return Episode(0, lang, lang, tuple(cats), tuple(support), tuple(query), seed)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_config(EncoderConfig(max_length=64))  # the default: e5-small, LoRA r=8 on q/v


@pytest.fixture(scope="module")
def episode(data_dir: Path) -> Episode:
    return sib_episode(data_dir / "sib200" / "annotated" / "eng_Latn" / "train.tsv")


@pytest.mark.parametrize("algorithm", ALGORITHMS.names())
def test_one_real_episode_per_algorithm(encoder: Encoder, episode: Episode, algorithm: str) -> None:
    model = MetaModel(encoder, MetaConfig(algorithm=algorithm, inner_steps=2))
    params = model.meta_params()
    for p in params.values():
        p.grad = None
    loss, metrics = meta_step_loss(model, params, episode)
    loss.backward()
    assert torch.isfinite(loss) and 0.0 <= float(metrics["acc"]) <= 1.0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())
    assert any(float(p.grad.abs().sum()) > 0 for p in params.values())
    if ALGORITHMS.get(algorithm).first_order is False:
        assert encoder.attn_implementation == "eager"
    pred = MetaLearner(model, inner_steps=1).adapt(episode.support).predict([e.text for e in episode.query])
    assert pred.probs.shape == (35, 7)


def test_frozen_prototypes_beat_chance_on_english(encoder: Encoder, episode: Episode) -> None:
    pred = FrozenProtoLearner(encoder).adapt(episode.support).predict([e.text for e in episode.query])
    acc = float(np.mean(pred.labels == np.array([e.label for e in episode.query])))
    assert acc > 0.25, acc  # chance is 1/7; the pretrained encoder alone does much better
