"""Collation: dynamic padding, prefixes, truncation, labels, and length bucketing with order restore."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmeta.data.collate import bucket_by_length, collate
from xmeta.interfaces import Example
from xmeta.models.tiny import tiny_tokenizer

TEXTS = ["a b c d e f", "a", "b c", "c d e f g h i j", "e", "a b c"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer("a b c d e f g h i j query: passage:".split())


def test_dynamic_padding_and_prefix(tok):
    batch = collate(["a b", "c"], tok)
    assert batch["input_ids"].shape == (2, 4)  # <s> a b </s>; padded to the longest, not to max_length
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    with_prefix = collate(["a b", "c"], tok, prefix="query: ")
    assert with_prefix["input_ids"].shape == (2, 5)
    assert tok.convert_ids_to_tokens(with_prefix["input_ids"][1].tolist())[:3] == ["<s>", "query:", "c"]


def test_truncation_and_pad_multiple(tok):
    batch = collate(["a b c d e f g h"], tok, max_length=4)
    assert batch["input_ids"].shape == (1, 4) and batch["input_ids"][0, -1].item() == tok.eos_token_id
    assert collate(["a"], tok, pad_to_multiple_of=8)["input_ids"].shape == (1, 8)


def test_examples_carry_labels(tok):
    exs = [Example("u1", "a b", 1, "x"), Example("u2", "c", 0, "y")]
    batch = collate(exs, tok)
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [1, 0]
    assert collate(exs, tok, return_tensors="np")["labels"].tolist() == [1, 0]


def test_buckets_sort_by_length_and_restore_order(tok):
    buckets = bucket_by_length(TEXTS, tok, batch_size=2)
    assert len(buckets) == 3
    lengths = [b["input_ids"].shape[1] for b in buckets]
    assert lengths == sorted(lengths, reverse=True) == [10, 5, 3]  # each batch padded only to its own longest
    assert sorted(buckets.order.tolist()) == list(range(len(TEXTS)))
    # Per-item outputs (here: the number of real tokens) come back in the original order.
    per_batch = [b["attention_mask"].sum(dim=1) for b in buckets]
    restored = buckets.restore_batches(per_batch)
    assert restored.tolist() == [len(t.split()) + 2 for t in TEXTS]
    assert buckets.restore(np.concatenate([p.numpy() for p in per_batch])).tolist() == restored.tolist()
    assert buckets.restore([str(i) for i in buckets.order]) == [str(i) for i in range(len(TEXTS))]
    assert [idx.tolist() for idx in buckets.indices()] == [buckets.order[i : i + 2].tolist() for i in (0, 2, 4)]


def test_buckets_are_stable_and_handle_edge_cases(tok):
    same = bucket_by_length(["a", "b", "c"], tok, batch_size=2)
    assert same.order.tolist() == [0, 1, 2]  # equal lengths keep their order
    assert len(bucket_by_length([], tok, batch_size=4)) == 0
    with pytest.raises(ValueError, match="batch_size"):
        bucket_by_length(TEXTS, tok, batch_size=0)
    with pytest.raises(ValueError, match="expected outputs for 6 items"):
        bucket_by_length(TEXTS, tok, batch_size=4).restore([1, 2])
