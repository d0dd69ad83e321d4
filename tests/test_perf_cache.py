"""The run-long frozen-layer activation cache: same losses and meta-gradients, reuse, determinism."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from toy_task import randomize_adapters, toy_encoder, toy_episode

from xmeta.interfaces import Example
from xmeta.meta import (
    ActivationCache,
    MetaConfig,
    MetaModel,
    activation_cache_for,
    encoder_config_for,
    meta_step_loss,
    tokenize_episode,
)
from xmeta.meta.cache import RUN_ALL_LAYERS
from xmeta.models.encoder import EncoderConfig

TINY = EncoderConfig(model="tiny", text_prefix="", lora_r=2, lora_alpha=2.0, dtype="float64", lora_top_layers=1)

# bf16 storage rounds the cached hidden states to 8 significant bits; on this toy encoder the
# episode loss then moves by < 1e-2 relative (on multilingual-e5-small: ~1e-3, see eval/perf).
BF16_LOSS_RTOL = 2e-2


def _model(algorithm: str = "maml", **enc_kw: object) -> MetaModel:
    meta = MetaConfig(algorithm=algorithm, inner_steps=2, inner_lr=0.5)
    enc = toy_encoder(encoder_config_for(dataclasses.replace(TINY, **enc_kw), meta), layers=3)
    randomize_adapters(enc, std=0.2, seed=1)
    return MetaModel(enc, meta)


def _loss_and_grads(model: MetaModel, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    params = model.meta_params()
    loss, _ = meta_step_loss(model, params, batch)
    return loss.detach(), list(torch.autograd.grad(loss, list(params.values())))


@pytest.mark.parametrize("algorithm", ["protonet", "fomaml", "maml", "protomaml"])
@pytest.mark.parametrize("top", [1, None])
def test_cached_episode_equals_the_uncached_one(algorithm: str, top: int | None) -> None:
    model = _model(algorithm, lora_top_layers=top)
    cache = ActivationCache(model.encoder, dtype=torch.float64)
    ep = toy_episode(3, n_way=3, k_shot=3, q_query=2)
    ref_loss, ref_grads = _loss_and_grads(model, tokenize_episode(model.encoder, ep))
    batch = tokenize_episode(model.encoder, ep, cache_frozen=cache)
    assert set(batch.support) == {"hidden_states", "lengths", "start_layer"}
    assert batch.support["start_layer"] == model.encoder.first_trainable_layer
    loss, grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_bf16_storage_stays_within_the_documented_tolerance() -> None:
    model = _model("fomaml")
    ep = toy_episode(4)
    ref, _ = _loss_and_grads(model, tokenize_episode(model.encoder, ep))
    bf16 = ActivationCache(model.encoder)  # the default storage
    assert bf16.dtype == torch.bfloat16
    loss, _ = _loss_and_grads(model, tokenize_episode(model.encoder, ep, cache_frozen=bf16))
    assert loss.dtype == torch.float64  # stored compactly, computed at the encoder's precision
    torch.testing.assert_close(loss, ref, rtol=BF16_LOSS_RTOL, atol=0)
    assert bf16.nbytes == bf16.n_tokens * model.encoder.hidden_size * 2


def test_each_example_is_computed_once_and_independently_of_its_batch() -> None:
    enc = _model().encoder
    a, b = toy_episode(0), toy_episode(1)
    c1 = ActivationCache(enc, dtype=torch.float64)
    tokenize_episode(enc, a, cache_frozen=c1)
    assert c1.misses == len(a.support) + len(a.query) and c1.hits == 0
    tokenize_episode(enc, a, cache_frozen=c1)  # a second use of the same examples: all hits
    assert c1.misses == len(a.support) + len(a.query) and c1.hits == c1.misses  # no recompute
    tokenize_episode(enc, b, cache_frozen=c1)
    # Filled in another order and grouping (as after a resume): bitwise the same rows.
    c2 = ActivationCache(enc, dtype=torch.float64)
    mixed = list(b.query) + list(a.support[:2]) + list(b.support)
    c2.fill(mixed)
    c2.fill(list(a.support) + list(a.query))
    for ex in list(a.support) + list(b.query):
        x1 = c1.batch([ex])["hidden_states"]
        x2 = c2.batch([ex])["hidden_states"]
        assert torch.equal(x1, x2), ex.uid
    fast = ActivationCache(enc, dtype=torch.float64, batched_fill=True)  # grouped by length: close
    torch.testing.assert_close(fast.batch(mixed)["hidden_states"], c1.batch(mixed)["hidden_states"])


def test_frozen_layers_are_cached_without_dropout() -> None:
    model = _model("protonet")
    for m in model.encoder.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.5
    model.train()
    cache = ActivationCache(model.encoder, dtype=torch.float64)
    ex = toy_episode(2).support[0]
    h = cache.batch([ex])["hidden_states"]
    assert all(m.training for m in model.modules())  # the fill restores the modes it found
    model.eval()
    tokens = model.encoder.tokenize([ex.text])
    ref = model.encoder.hidden_states_at(tokens["input_ids"], tokens["attention_mask"], layer=cache.layer)
    torch.testing.assert_close(h, ref[0])


def test_a_uid_with_another_text_is_refused() -> None:
    enc = _model().encoder
    cache = ActivationCache(enc, dtype=torch.float32)
    cache.fill([Example("u1", "k0x1 w3", 0, "a")])
    with pytest.raises(ValueError, match="another text"):
        cache.fill([Example("u1", "k1x1 w3", 0, "a")])
    with pytest.raises(ValueError, match="two different texts"):
        cache.fill([Example("u2", "w1", 0, "a"), Example("u2", "w2", 0, "a")])


def test_store_spills_to_a_memory_mapped_file(tmp_path) -> None:
    enc = _model().encoder
    examples = list(toy_episode(5).support) + list(toy_episode(5).query)
    ram = ActivationCache(enc, dtype=torch.bfloat16)
    disk = ActivationCache(enc, dtype=torch.bfloat16, directory=tmp_path, memory_limit_mb=0.001)
    ram.fill(examples[:4])
    disk.fill(examples[:4])
    disk.fill(examples[4:])  # grows the mapped file
    ram.fill(examples[4:])
    assert disk.memory_mapped and not ram.memory_mapped and any(tmp_path.iterdir())
    for packed in (True, False):
        x, y = ram.batch(examples, packed=packed), disk.batch(examples, packed=packed)
        assert torch.equal(x["hidden_states"], y["hidden_states"])
    disk.close()
    assert not any(tmp_path.iterdir()) or disk.n_tokens == 0


def test_padded_batches_match_packed_ones() -> None:
    model = _model("fomaml")
    cache = ActivationCache(model.encoder, dtype=torch.float64)
    ex = toy_episode(6).support
    packed, padded = cache.batch(ex), cache.batch(ex, packed=False)
    assert padded["hidden_states"].dim() == 3
    torch.testing.assert_close(model.encoder(**packed), model.encoder(**padded))


def test_layout_change_is_detected_and_factory_falls_back() -> None:
    model = _model("fomaml")
    cache = activation_cache_for(model.encoder)
    assert isinstance(cache, ActivationCache)
    model.encoder.lora_layers = (0, *model.encoder.lora_layers)
    with pytest.raises(RuntimeError, match="layout changed"):
        cache.fill(toy_episode(0).support)
    assert activation_cache_for(model.encoder, enabled=False) is RUN_ALL_LAYERS  # tokens: no caching


def test_frozen_encoder_caches_the_last_layer() -> None:
    enc = toy_encoder(dataclasses.replace(TINY, lora_r=0, lora_top_layers=None), layers=3)
    model = MetaModel(enc, MetaConfig(algorithm="protonet", projection_dim=4))
    cache = ActivationCache(enc, dtype=torch.float64)
    assert cache.layer == enc.num_layers  # nothing to run but pooling
    ep = toy_episode(7)
    ref_loss, ref_grads = _loss_and_grads(model, tokenize_episode(enc, ep))
    loss, grads = _loss_and_grads(model, tokenize_episode(enc, ep, cache_frozen=cache))
    torch.testing.assert_close(loss, ref_loss)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)
