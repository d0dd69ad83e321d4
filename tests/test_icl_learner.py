"""ICLLearner/ICLPredictor on a tiny random causal LM: interface, demonstrations, truncation,
zero-shot, calibration, model loading."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import tiny_bpe_tokenizer, tiny_causal_lm
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from xmeta.errors import XmetaError
from xmeta.icl import ICLConfig, ICLLearner, ICLPredictor
from xmeta.icl.learner import drop_one_demonstration, order_demonstrations
from xmeta.icl.lm import load_causal_lm, resolve_dtype
from xmeta.interfaces import Example, Learner, Predictor

NAMES = ("sports", "travel", "geography")
TEXTS = {
    "sports": ["The team won the match.", "She ran the marathon in record time."],
    "travel": ["We booked a hotel near the beach.", "Pack light for the trip."],
    "geography": ["The river flows into the sea.", "The island has two volcanoes."],
}
QUERIES = ["The striker scored twice.", "Mountains cover the north.", "Hi"]


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return tiny_bpe_tokenizer()


@pytest.fixture(scope="module")
def model(tok: PreTrainedTokenizerFast) -> PreTrainedModel:
    return tiny_causal_lm(len(tok), arch="gemma3", sliding_window=8)


@pytest.fixture(scope="module")
def support() -> list[Example]:
    return [
        Example(f"{name}-{k}", text, label, name)
        for label, name in enumerate(NAMES)
        for k, text in enumerate(TEXTS[name])
    ]


def learner(model: PreTrainedModel, tok: PreTrainedTokenizerFast, **kw) -> ICLLearner:
    return ICLLearner(model, tokenizer=tok, **kw)


def test_fits_the_shared_protocols(model, tok, support) -> None:
    lrn = learner(model, tok)
    pred = lrn.adapt(support, seed=0)
    assert isinstance(lrn, Learner) and isinstance(pred, Predictor)
    out = pred.predict(QUERIES)
    assert pred.label_names == NAMES
    assert out.labels.shape == (3,) and out.probs.shape == (3, 3)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0)
    assert out.labels.tolist() == out.probs.argmax(axis=1).tolist()
    assert pred.predict([]).probs.shape == (0, 3)


def test_demonstrations_are_exactly_the_support_shuffled_by_seed(model, tok, support) -> None:
    lrn = learner(model, tok)
    a, b, c = (lrn.adapt(support, seed=s).demonstrations for s in (0, 0, 1))
    assert sorted(d.uid for d in a) == sorted(e.uid for e in support)
    assert a == b and a != c
    prompt = lrn.adapt(support, seed=0).prompt("Q")
    assert all(f"Sentence: {d.text}\nTopic: {d.label_name}\n\n" in prompt for d in support)


def test_prompt_golden(model, tok, support) -> None:
    demos = order_demonstrations(support[:2] + support[2:4], seed=3)
    pred = learner(model, tok).adapt(support[:2] + support[2:4], seed=3)
    assert [d.uid for d in pred.demonstrations] == [d.uid for d in demos]
    blocks = "".join(f"Sentence: {d.text}\nTopic: {d.label_name}\n\n" for d in demos)
    assert pred.prompt("Cells divide.", "travel") == (
        "Classify each sentence into one of these topics: sports, travel.\n\n"
        + blocks
        + "Sentence: Cells divide.\nTopic: travel"
    )


def test_scores_are_the_naive_full_prompt_scores(model, tok, support) -> None:
    cached = learner(model, tok).adapt(support, seed=0)
    naive = learner(model, tok, use_cache=False).adapt(support, seed=0)
    np.testing.assert_allclose(cached.score(QUERIES).logprob_sum, naive.score(QUERIES).logprob_sum, atol=1e-4)
    # And they are the plain log-likelihood of the label text after the rendered prompt.
    bos = [tok.bos_token_id]
    p = tok(cached.prompt("").rsplit("Sentence:", 1)[0], add_special_tokens=False)["input_ids"]
    q = tok("Sentence: Hi\nTopic:", add_special_tokens=False)["input_ids"]
    lab = tok(" geography", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(torch.tensor([bos + p + q + lab])).logits[0].double().log_softmax(-1)
    start = len(bos + p + q) - 1
    manual = sum(float(logp[start + t, i]) for t, i in enumerate(lab))
    assert cached.score(["Hi"]).logprob_sum[0, 2] == pytest.approx(manual, abs=1e-4)


def test_mean_normalisation_changes_scores_of_long_labels(model, tok, support) -> None:
    pred = learner(model, tok, normalize="mean").adapt(support)
    raw = pred.score(QUERIES)
    assert raw.n_tokens.max() > 1
    probs = pred.predict(QUERIES).probs
    expected = np.exp(raw.scores("mean"))
    np.testing.assert_allclose(probs, expected / expected.sum(axis=1, keepdims=True), atol=1e-9)


def test_zero_shot_has_no_demonstrations(model, tok, support) -> None:
    pred = learner(model, tok, zero_shot=True).adapt(support)
    assert (
        pred.prompt("Hi")
        == "Classify each sentence into one of these topics: sports, travel, geography.\n\nSentence: Hi\nTopic:"
    )
    naive = learner(model, tok, zero_shot=True, use_cache=False).adapt(support)
    np.testing.assert_allclose(pred.score(QUERIES).logprob_sum, naive.score(QUERIES).logprob_sum, atol=1e-4)
    assert pred.n_demonstrations_used == 0


def test_calibration_divides_out_the_content_free_prior(model, tok, support) -> None:
    plain = learner(model, tok).adapt(support)
    calib = learner(model, tok, calibrate=True, content_free=("N/A", "")).adapt(support)
    scores = plain.score(QUERIES).scores("sum")
    cf = plain.score(["N/A", ""]).scores("sum")
    prior = (np.exp(cf) / np.exp(cf).sum(axis=1, keepdims=True)).mean(axis=0)
    np.testing.assert_allclose(calib.label_prior(), prior, atol=1e-9)
    p = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True) / prior
    np.testing.assert_allclose(calib.predict(QUERIES).probs, p / p.sum(axis=1, keepdims=True), atol=1e-9)
    # A single content-free query is mapped to exactly uniform probabilities.
    single = learner(model, tok, calibrate=True).adapt(support)
    np.testing.assert_allclose(single.predict(["N/A"]).probs, np.full((1, 3), 1 / 3), atol=1e-9)


def test_long_prompt_drops_demonstrations_evenly(model, tok, support, caplog) -> None:
    full = learner(model, tok).adapt(support)
    full.score(QUERIES)
    prefix_len = full.prefix_tokens
    limit = prefix_len - 12  # too short for all demonstrations, long enough for some
    lrn = learner(model, tok, max_length=limit)
    pred = lrn.adapt(support)
    with caplog.at_level(logging.WARNING, logger="xmeta.icl.learner"):
        scores = pred.score(QUERIES).logprob_sum
    assert "dropped" in caplog.text and f"{limit}-token context" in caplog.text
    kept = [d for d in pred.demonstrations if d.uid in pred._prefix[0]]
    assert 0 < pred.n_demonstrations_used == len(kept) < len(support)
    counts = Counter(d.label for d in kept)
    assert max(counts.values()) - min(counts.get(i, 0) for i in range(3)) <= 1
    assert len(pred._prefix[1]) + max(len(x) for x in pred._label_ids) <= limit
    # Same scores as a prompt built from the kept demonstrations directly, without the cache.
    naive = learner(model, tok, use_cache=False).adapt(support)
    naive.demonstrations = tuple(kept)
    np.testing.assert_allclose(scores, naive.score(QUERIES).logprob_sum, atol=1e-4)


def test_prompt_that_never_fits_is_a_clear_error(model, tok, support) -> None:
    pred = learner(model, tok, max_length=12).adapt(support)
    with pytest.raises(XmetaError, match="even zero-shot"):
        pred.predict(QUERIES)


def test_drop_one_demonstration_balances_classes(support) -> None:
    demos = order_demonstrations(support, seed=5)
    seen = []
    while demos:
        demos = drop_one_demonstration(demos)
        counts = Counter(d.label for d in demos)
        seen.append(max(counts.values(), default=0) - min([counts.get(i, 0) for i in range(3)]))
    assert max(seen) <= 1


def test_unbalanced_support_is_used_with_a_warning(model, tok, support, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="xmeta.icl.learner"):
        pred = learner(model, tok).adapt(support[:-1])
    assert "not class-balanced" in caplog.text and len(pred.demonstrations) == len(support) - 1


def test_bad_support_is_rejected(model, tok) -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        learner(model, tok).adapt([Example("a", "x", 0, "sports")])


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="normalize"):
        ICLConfig(normalize="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):
        ICLConfig(dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        ICLConfig(batch_size=0)
    with pytest.raises(ValueError, match="tokenizer"):
        ICLLearner(tiny_causal_lm(16))
    assert resolve_dtype("bf16") is torch.bfloat16


def test_load_by_path_with_dtype_and_device(model, tok, support, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_causal_lm(tmp_path, dtype="bfloat16", device="cpu")
    assert loaded.dtype == torch.bfloat16 and loaded.device.type == "cpu"
    assert loaded_tok("Hi")["input_ids"] == tok("Hi")["input_ids"]
    lrn = ICLLearner.from_config(ICLConfig(model=str(tmp_path), dtype="float32", device="cpu"))
    pred = lrn.adapt(support)
    assert isinstance(pred, ICLPredictor)
    reference = learner(model, tok).adapt(support)
    np.testing.assert_allclose(pred.score(QUERIES).logprob_sum, reference.score(QUERIES).logprob_sum, atol=1e-5)
    bf16 = ICLLearner(str(tmp_path), dtype="bfloat16", device="cpu").adapt(support)
    assert np.isfinite(bf16.predict(QUERIES).probs).all()
