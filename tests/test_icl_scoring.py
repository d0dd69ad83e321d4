"""Log-likelihood scorer on tiny random causal LMs: manual computation, cache == naive, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import tiny_bpe_tokenizer, tiny_causal_lm
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from xmeta.icl.scoring import LabelScores, LogLikelihoodScorer, fork_cache

TOL = 1e-4


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return tiny_bpe_tokenizer()


@pytest.fixture(scope="module", params=["gemma3", "llama"])
def model(request: pytest.FixtureRequest, tok: PreTrainedTokenizerFast) -> PreTrainedModel:
    # gemma3: sliding window 8 << prompt length, so the hybrid sliding/full cache is exercised.
    return tiny_causal_lm(len(tok), arch=request.param, sliding_window=8)


def ids(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def parts(tok: PreTrainedTokenizerFast) -> tuple[list[int], list[list[int]], list[list[int]]]:
    prefix = [tok.bos_token_id] + ids(
        tok,
        "Classify.\n\nSentence: The team won the match.\nTopic: sports\n\nSentence: We booked a hotel.\nTopic: travel\n\n",
    )
    queries = [
        ids(tok, f"Sentence: {t}\nTopic:") for t in ("Cells divide.", "The minister spoke at length today.", "Hi")
    ]
    # Labels of 1 and several tokens (words the BPE never saw split into many pieces).
    labels = [ids(tok, f" {w}") for w in ("sports", "travel", "geography", "science/technology")]
    assert len(prefix) > 16 and {len(lab) for lab in labels} & {1} and max(len(lab) for lab in labels) > 2
    return prefix, queries, labels


def manual_logprob(model: PreTrainedModel, context: list[int], label: list[int]) -> float:
    """Sum of log p(label_t | context, label_<t) from one plain forward pass of the full sequence."""
    full = torch.tensor([context + label])
    with torch.no_grad():
        logp = model(full).logits[0].double().log_softmax(-1)
    return sum(float(logp[len(context) - 1 + t, tok_id]) for t, tok_id in enumerate(label))


# Label sets with no, one and several multi-token labels: the cached path scores them with one
# forward per query (first two) or with a second, batched forward over the labels (last).
LABEL_SETS = [
    ("sports", "travel"),
    ("sports", "science/technology", "travel"),
    ("geography", "science/technology", "sports"),
]


@pytest.mark.parametrize("words", LABEL_SETS, ids=["single-token", "one-long", "several-long"])
def test_scores_match_manual_computation(model: PreTrainedModel, tok, parts, words: tuple[str, ...]) -> None:
    prefix, queries, _ = parts
    labels = [ids(tok, f" {w}") for w in words]
    assert sum(len(lab) > 1 for lab in labels) == LABEL_SETS.index(words)
    scorer = LogLikelihoodScorer(model)
    expected = np.array([[manual_logprob(model, prefix + q, lab) for lab in labels] for q in queries])
    naive = scorer.score_naive(prefix, queries, labels)
    cached = scorer.score_cached(scorer.encode(prefix), queries, labels)
    np.testing.assert_allclose(naive.logprob_sum, expected, atol=TOL, rtol=0)
    np.testing.assert_allclose(cached.logprob_sum, expected, atol=TOL, rtol=0)
    assert naive.n_tokens.tolist() == [len(lab) for lab in labels]


@pytest.mark.parametrize("words", LABEL_SETS, ids=["single-token", "one-long", "several-long"])
def test_cache_equals_naive_with_prefix_longer_than_window(model: PreTrainedModel, tok, parts, words) -> None:
    _, queries, _ = parts
    labels = [ids(tok, f" {w}") for w in words]
    long_prefix = [tok.bos_token_id] + ids(tok, "Sentence: Cells divide and genes mutate.\nTopic: science\n\n" * 6)
    assert len(long_prefix) > 8 * 8
    scorer = LogLikelihoodScorer(model)
    naive = scorer.score_naive(long_prefix, queries, labels).logprob_sum
    cached = scorer.score_cached(scorer.encode(long_prefix), queries, labels).logprob_sum
    np.testing.assert_allclose(cached, naive, atol=TOL, rtol=0)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batching_does_not_change_scores(model: PreTrainedModel, parts, batch_size: int) -> None:
    prefix, queries, labels = parts
    reference = LogLikelihoodScorer(model, batch_size=64)
    small = LogLikelihoodScorer(model, batch_size=batch_size)
    ref = reference.score_cached(reference.encode(prefix), queries, labels).logprob_sum
    np.testing.assert_allclose(small.score_cached(small.encode(prefix), queries, labels).logprob_sum, ref, atol=TOL)
    np.testing.assert_allclose(small.score_naive(prefix, queries, labels).logprob_sum, ref, atol=TOL)


def test_prefix_cache_is_reusable_and_untouched(model: PreTrainedModel, parts) -> None:
    prefix, queries, labels = parts
    scorer = LogLikelihoodScorer(model)
    state = scorer.encode(prefix)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in state.cache.layers]
    length = state.cache.get_seq_length()
    first = scorer.score_cached(state, queries, labels).logprob_sum
    second = scorer.score_cached(state, queries[::-1], labels).logprob_sum[::-1]
    np.testing.assert_array_equal(first, second)
    assert state.cache.get_seq_length() == length
    for layer, (k, v) in zip(state.cache.layers, before):
        assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)


def test_fork_cache_shares_memory(model: PreTrainedModel, parts) -> None:
    scorer = LogLikelihoodScorer(model)
    state = scorer.encode(parts[0])
    forked = fork_cache(state.cache, 5)
    for a, b in zip(state.cache.layers, forked.layers):
        assert b.keys.shape[0] == 5 and b.keys.data_ptr() == a.keys.data_ptr()


def test_empty_prefix_scores_from_query_alone(model: PreTrainedModel, parts) -> None:
    _, queries, labels = parts
    scorer = LogLikelihoodScorer(model)
    cached = scorer.score_cached(scorer.encode([]), queries, labels).logprob_sum
    np.testing.assert_allclose(cached, scorer.score_naive([], queries, labels).logprob_sum, atol=TOL)
    with pytest.raises(ValueError, match="no context"):
        scorer.score_cached(scorer.encode([]), [[]], labels)


def test_empty_label_is_an_error(model: PreTrainedModel, parts) -> None:
    scorer = LogLikelihoodScorer(model)
    with pytest.raises(ValueError, match="label 1 tokenizes to no tokens"):
        scorer.score_naive(parts[0], parts[1], [[5], []])


def test_length_normalisation() -> None:
    scores = LabelScores(np.array([[-2.0, -6.0]]), np.array([1, 3]))
    np.testing.assert_allclose(scores.scores("sum"), [[-2.0, -6.0]])
    np.testing.assert_allclose(scores.scores("mean"), [[-2.0, -2.0]])
    with pytest.raises(ValueError, match="normalize"):
        scores.scores("max")  # type: ignore[arg-type]
