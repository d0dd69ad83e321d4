"""The peers: the logistic-regression probe (against scikit-learn on the same features, MTEB's
sampling) and SetFit through the real library on the real encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from tiny_models import tiny_encoder, tiny_tokenizer

from xmeta.errors import XmetaError
from xmeta.interfaces import Example
from xmeta.models.encoder import Encoder, EncoderConfig
from xmeta.peers import FrozenEmbedder, LogRegConfig, LogRegLearner
from xmeta.peers.logreg import mteb_protocol, undersample

WORDS = "ball goal team doctor pill fever bank price coin the a of".split()
TOPICS = {"sport": "ball goal team", "health": "doctor pill fever", "money": "bank price coin"}


def _encoder(normalize: bool = True) -> Encoder:
    cfg = EncoderConfig(model="tiny", lora_r=0, normalize=normalize, text_prefix="")
    return Encoder(tiny_encoder(len(WORDS) + 5, seed=3), tiny_tokenizer(WORDS), cfg)


def _support(k: int = 4) -> list[Example]:
    g = np.random.default_rng(0)
    out = []
    for label, (name, words) in enumerate(TOPICS.items()):
        for i in range(k):
            text = " ".join(g.choice(words.split(), 3).tolist() + ["the", "a"][: i % 2 + 1])
            out.append(Example(f"{name}{i}", text, label, name))
    return out


def test_logreg_equals_sklearn_on_the_same_embeddings() -> None:
    enc, support = _encoder(), _support()
    pred = LogRegLearner(enc).adapt(support, seed=7)
    queries = ["ball team the", "pill doctor a", "coin bank of", "goal fever price"]
    got = pred.predict(queries)

    with torch.no_grad():
        emb = lambda texts: enc(**enc.tokenize(texts)).numpy()  # noqa: E731
    ref = LogisticRegression(max_iter=100, random_state=7).fit(
        emb([e.text for e in support]), [e.label for e in support]
    )
    np.testing.assert_allclose(got.probs, ref.predict_proba(emb(queries)), atol=1e-6)
    assert got.labels.tolist() == ref.predict(emb(queries)).tolist()
    assert got.label_names == ("sport", "health", "money")


def test_logreg_normalises_like_e5s_sentence_transformers_pipeline() -> None:
    emb = FrozenEmbedder(_encoder(normalize=True))(["ball goal", "bank coin price"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    assert LogRegConfig().normalize and LogRegConfig().max_iter == 100  # MTEB's probe


def test_non_finite_embeddings_are_an_error_not_features() -> None:
    enc = _encoder()
    with torch.no_grad():
        enc.backbone.embeddings.word_embeddings.weight[3].fill_(float("nan"))
    with pytest.raises(XmetaError, match="non-finite sentence embeddings"):
        FrozenEmbedder(enc)([WORDS[0], "the"])


def test_mteb_undersampling_takes_k_per_label_and_reshuffles() -> None:
    labels = np.repeat(np.arange(7), 100)
    idxs, rng = np.arange(len(labels)), np.random.RandomState(42)
    first = undersample(labels, 8, idxs, rng)
    second = undersample(labels, 8, idxs, rng)
    for keep in (first, second):
        assert np.bincount(labels[keep], minlength=7).tolist() == [8] * 7
    assert set(first) != set(second)


def test_mteb_protocol_on_separable_features() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(7, 16)) * 5
    y_train, y_test = np.repeat(np.arange(7), 50), np.repeat(np.arange(7), 20)
    x_train = centers[y_train] + rng.normal(size=(len(y_train), 16))
    x_test = centers[y_test] + rng.normal(size=(len(y_test), 16))
    out = mteb_protocol((x_train, y_train), (x_test, y_test))
    assert len(out["accuracy_per_experiment"]) == 10
    assert out["accuracy"] == pytest.approx(np.mean(out["accuracy_per_experiment"])) and out["accuracy"] > 0.95


@pytest.mark.slow
def test_setfit_trains_a_fresh_body_per_episode_on_the_real_encoder(data_dir) -> None:
    from xmeta.bench.config import BenchConfig
    from xmeta.bench.episodes import load_eval_data, make_episodes
    from xmeta.peers.setfit_learner import SetFitConfig, SetFitLearner

    cfg = BenchConfig(langs=["swh_Latn"], episodes_per_lang=1, k_shot=[2], q_query=2, data_dir=str(data_dir))
    ep = make_episodes(cfg, load_eval_data(cfg))[2]["swh_Latn"][0]
    learner = SetFitLearner("multilingual-e5-small", SetFitConfig(max_steps=3))
    base = {k: v.clone() for k, v in learner.load().state_dict().items()}
    texts = [q.text for q in ep.query]
    a = learner.adapt(ep.support, seed=1).predict(texts)
    b = learner.adapt(ep.support, seed=1).predict(texts)
    after = learner.load().state_dict()
    assert all(torch.equal(base[k], after[k]) for k in base)  # episodes never train the shared body
    assert a.probs.shape == (14, 7) and np.allclose(a.probs.sum(1), 1.0)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)  # seeded per episode
    # The body reproduces the encoder's (prefixed, mean-pooled) embeddings before training.
    from xmeta.peers.setfit_learner import sentence_transformer

    st = sentence_transformer("multilingual-e5-small", SetFitConfig(normalize=False))
    enc = Encoder.from_config(EncoderConfig(lora_r=0))
    with torch.no_grad():
        ours = enc(**enc.tokenize(texts[:4])).numpy()
    theirs = st.encode(["query: " + t for t in texts[:4]], convert_to_numpy=True)
    np.testing.assert_allclose(theirs, ours, atol=2e-4)
