"""Batched (tiled) activation-cache fills: the one-at-a-time values, independent of the grouping;
a cache stored once and reused by later runs, verified before use."""

from __future__ import annotations

import dataclasses
import json
import logging
import random

import pytest
import torch
from toy_task import NOISE, keywords, randomize_adapters, toy_encoder

from xmeta.interfaces import Example
from xmeta.meta import MetaConfig, encoder_config_for
from xmeta.meta.cache import ActivationCache
from xmeta.meta.cache_store import (
    CACHE_MANIFEST,
    ActivationCacheError,
    activation_cache_key,
    load_activation_cache,
    prebuild_activation_cache,
    save_activation_cache,
)
from xmeta.models.encoder import EncoderConfig

CFG = EncoderConfig(model="tiny", text_prefix="", lora_r=2, lora_alpha=2.0, dtype="float32", lora_top_layers=1,
                    max_length=40)  # fmt: skip


def _encoder(dtype: str = "float32"):
    enc = toy_encoder(encoder_config_for(dataclasses.replace(CFG, dtype=dtype), MetaConfig()), hidden=32, layers=3)
    randomize_adapters(enc, std=0.2, seed=1)
    return enc


def _examples(n: int, seed: int = 0, prefix: str = "x") -> list[Example]:
    """Texts of 1 to 38 words (3 to 40 tokens, the maximum): every tile width, its edges included."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.choices(NOISE + keywords(i % 10), k=1 + i % 38)
        out.append(Example(f"{prefix}{i}", " ".join(words), i % 3, f"c{i % 3}", "toy_Latn"))
    return out


def _rows(cache: ActivationCache, examples: list[Example]) -> list[torch.Tensor]:
    return [cache.batch([e], fill=False)["hidden_states"] for e in examples]


@pytest.mark.parametrize("dtype, tol", [("float32", 2e-6), ("float64", 1e-12)])
def test_tiled_fill_equals_one_at_a_time(dtype: str, tol: float) -> None:
    enc = _encoder(dtype)
    examples = _examples(60)
    store = getattr(torch, dtype)
    one = ActivationCache(enc, dtype=store, batched_fill=False)
    tiles = ActivationCache(enc, dtype=store, fill_batch_tokens=64)  # several tiles per width, partial ones
    one.fill(examples)
    tiles.fill(examples)
    assert {len(enc.token_ids([e.text])[0]) for e in examples} >= set(range(3, 41))  # tile edges covered
    for a, b in zip(_rows(one, examples), _rows(tiles, examples)):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_tiled_values_do_not_depend_on_the_grouping(precision: str) -> None:
    enc = _encoder()
    examples = _examples(50)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        whole = ActivationCache(enc, dtype=torch.float32, fill_batch_tokens=64)
        whole.fill(examples)
        grouped = ActivationCache(enc, dtype=torch.float32, fill_batch_tokens=64)
        shuffled = examples[:]
        random.Random(3).shuffle(shuffled)
        for i in range(0, len(shuffled), 7):  # as a resumed run refills: other groups, other order
            grouped.fill(shuffled[i : i + 7])
    assert activation_cache_key(whole)["precision"] == precision
    for e, a, b in zip(examples, _rows(whole, examples), _rows(grouped, examples)):
        assert torch.equal(a, b), e.uid


def test_a_cache_is_stored_once_and_reused(tmp_path, caplog) -> None:
    enc = _encoder()
    examples = _examples(30)
    first = prebuild_activation_cache(enc, examples, tmp_path, dtype=torch.bfloat16)
    assert first.misses == len(examples) and first.loaded_from is None
    (store,) = tmp_path.iterdir()
    manifest = json.loads((store / CACHE_MANIFEST).read_text())
    assert manifest["key"]["layer"] == first.layer and manifest["key"]["dtype"] == "bfloat16"
    again = prebuild_activation_cache(enc, list(reversed(examples)), tmp_path, dtype=torch.bfloat16)
    assert again.loaded_from == store and again.misses == 0 and len(again) == len(examples)
    for a, b in zip(_rows(first, examples), _rows(again, examples)):
        assert torch.equal(a, b)
    # Another storage dtype or other examples: another key, another store; the first is untouched.
    prebuild_activation_cache(enc, examples, tmp_path, dtype=torch.float32)
    prebuild_activation_cache(enc, examples[:10], tmp_path, dtype=torch.bfloat16)
    assert len(list(tmp_path.iterdir())) == 3
    # A corrupt store is rebuilt, never used.
    data = store / "activations.bin"
    raw = bytearray(data.read_bytes())
    raw[5] ^= 0xFF
    data.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="xmeta.meta.cache_store"):
        rebuilt = prebuild_activation_cache(enc, examples, tmp_path, dtype=torch.bfloat16)
    assert "altered" in caplog.text and rebuilt.misses == len(examples) and rebuilt.loaded_from is None
    assert load_activation_cache(store, enc, dtype=torch.bfloat16).n_tokens == first.n_tokens  # rewritten


def test_load_refuses_other_settings_and_grows_without_touching_the_store(tmp_path) -> None:
    enc = _encoder()
    examples = _examples(20)
    cache = ActivationCache(enc, dtype=torch.bfloat16)
    cache.fill(examples)
    save_activation_cache(cache, tmp_path / "c")
    with pytest.raises(ActivationCacheError, match="dtype: stored 'bfloat16', expected 'float32'"):
        load_activation_cache(tmp_path / "c", enc, dtype=torch.float32)
    with pytest.raises(ActivationCacheError, match="fill"):
        load_activation_cache(tmp_path / "c", enc, dtype=torch.bfloat16, fill_batch_tokens=128)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ActivationCacheError, match="precision"):
        load_activation_cache(tmp_path / "c", enc, dtype=torch.bfloat16)
    other = _encoder()
    with torch.no_grad():
        other.backbone.encoder.layer[0].output.dense.weight.mul_(1.01)  # a frozen layer changed
    with pytest.raises(ActivationCacheError, match="frozen_sha256"):
        load_activation_cache(tmp_path / "c", other, dtype=torch.bfloat16)
    before = (tmp_path / "c" / "activations.bin").read_bytes()
    mapped = load_activation_cache(tmp_path / "c", enc, dtype=torch.bfloat16, memory_limit_mb=0)
    assert mapped.memory_mapped
    more = _examples(15, seed=1, prefix="y")
    mapped.fill(more)  # grows into memory or a file of its own
    cache.fill(more)
    assert (tmp_path / "c" / "activations.bin").read_bytes() == before
    for a, b in zip(_rows(cache, examples + more), _rows(mapped, examples + more)):
        assert torch.equal(a, b)
    mapped.close()
    with pytest.raises(ActivationCacheError, match="not an activation cache"):
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "notes.txt").write_text("mine")
        save_activation_cache(cache, tmp_path / "x")


@pytest.mark.slow
def test_tiled_fill_matches_one_at_a_time_on_e5_small() -> None:
    """Real multilingual-e5-small, top-4 adapter cut, bf16 storage of fp32 fills: each example's
    largest difference from the one-at-a-time value is within one bf16 ulp of its largest value
    (the fp32 values differ by float round-off; storage rounding can then move a value by one ulp)."""
    from xmeta.models.encoder import Encoder

    enc = Encoder.from_config(EncoderConfig(max_length=64, lora_top_layers=4))
    rng = random.Random(0)
    words = "the a market team doctor bank price goal clinic fever coin match of and to in".split()
    examples = [Example(f"e{i}", " ".join(rng.choices(words, k=rng.randint(2, 50))), 0, "c", "eng_Latn")
                for i in range(40)]  # fmt: skip
    one = ActivationCache(enc, batched_fill=False)
    tiles = ActivationCache(enc)
    one.fill(examples)
    tiles.fill(examples)
    for e, a, b in zip(examples, _rows(one, examples), _rows(tiles, examples)):
        a, b = a.float(), b.float()
        ulp = torch.finfo(torch.bfloat16).eps * torch.exp2(torch.floor(torch.log2(a.abs().max())))
        assert float((a - b).abs().max()) <= float(ulp), e.uid
