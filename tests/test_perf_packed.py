"""Packed (padding-free) BERT layers: same embeddings and gradients as HF's padded forward."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from toy_task import randomize_adapters, toy_encoder, vocabulary

from xmeta.models.encoder import EncoderConfig
from xmeta.models.inputs import HiddenStates, PackedStates, TokenBatch
from xmeta.models.packed import length_buckets

TINY = EncoderConfig(model="tiny", text_prefix="", lora_r=2, lora_alpha=2.0, dtype="float64", max_length=48)


def _texts(n: int = 17, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = vocabulary()
    return [" ".join(rng.choices(words, k=rng.randint(1, 40))) for _ in range(n)]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("pooling,normalize", [("mean", False), ("cls", True)])
@pytest.mark.parametrize("top", [None, 1])
def test_packed_forward_and_gradients_equal_the_padded_forward(attn, pooling, normalize, top) -> None:
    enc = toy_encoder(dataclasses.replace(TINY, pooling=pooling, normalize=normalize, lora_top_layers=top))
    enc.set_attn_implementation(attn)
    randomize_adapters(enc, seed=2)
    tokens = enc.tokenize(_texts())
    assert tokens["attention_mask"].sum() < tokens["attention_mask"].numel()  # there is padding to skip
    packed = enc.cache_frozen_layers(tokens, packed=True)
    assert packed["hidden_states"].shape[0] == int(tokens["attention_mask"].sum())
    lora = [p for p in enc.parameters() if p.requires_grad]
    ref = enc(**tokens)
    g_ref = torch.autograd.grad((ref * torch.linspace(-1, 1, ref.numel()).view_as(ref)).sum(), lora)
    out = enc(**packed)
    g_out = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), lora)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_packed_bf16_autocast_gradients_stay_close_to_the_padded_fp32_ones() -> None:
    """Under CPU bf16 autocast (attention in fp32, the rest per autocast), the packed forward and
    LoRA gradients stay within bf16 error of the fp32 padded reference, about as close as HF's
    own padded forward under the same autocast."""
    enc = toy_encoder(dataclasses.replace(TINY, dtype="float32", lora_top_layers=1), hidden=64, layers=2)
    randomize_adapters(enc, seed=3)
    tokens = enc.tokenize(_texts(13, seed=2))
    packed = enc.cache_frozen_layers(tokens, packed=True)
    lora = [p for p in enc.parameters() if p.requires_grad]

    def run(batch, bf16: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = enc(**batch).float()
        loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()
        return out.detach(), list(torch.autograd.grad(loss, lora))

    ref, g_ref = run(tokens, False)
    hf, g_hf = run(tokens, True)
    out, g_out = run(packed, True)

    def err(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    assert err(out, ref) < max(2e-2, 3 * err(hf, ref))
    for a, h, r in zip(g_out, g_hf, g_ref):
        assert err(a, r) < max(3e-2, 3 * err(h, r))


def test_packed_second_order_gradients_equal_the_padded_ones() -> None:
    enc = toy_encoder(TINY)
    enc.set_attn_implementation("eager")
    randomize_adapters(enc, seed=5)
    tokens = enc.tokenize(_texts(9, seed=1))
    lora = [p for p in enc.parameters() if p.requires_grad]

    def hvp(batch: dict) -> list[torch.Tensor]:
        loss = enc(**batch).pow(2).sum()
        g = torch.autograd.grad(loss, lora, create_graph=True)
        return torch.autograd.grad(sum((x * x).sum() for x in g), lora)

    for a, b in zip(hvp(enc.packed_inputs(tokens)), hvp(tokens)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_encode_and_packed_inputs_match_the_padded_path() -> None:
    enc = toy_encoder(TINY)
    texts = _texts(7, seed=3)
    tokens = enc.tokenize(texts)
    torch.testing.assert_close(enc.encode(texts, batch_size=3), enc(**tokens).detach())
    assert set(enc.packed_inputs(tokens)) == {"hidden_states", "lengths", "start_layer"}


def test_packing_runs_with_dropout_in_training_mode() -> None:
    enc = toy_encoder(TINY)
    for m in enc.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.3
    enc.train()
    batch = enc.packed_inputs(enc.tokenize(_texts(5)))
    a, b = enc(**batch), enc(**batch)
    assert torch.isfinite(a).all() and not torch.equal(a, b)  # dropout is really applied
    enc.eval()
    torch.testing.assert_close(enc(**batch), enc(**batch), rtol=0, atol=0)


def test_length_buckets_partition_and_beat_one_bucket() -> None:
    lengths = sorted([64, 63, 60, 40, 38, 37, 36, 20, 19, 12, 9, 9, 8], reverse=True)
    sizes = length_buckets(lengths, overhead=100)
    assert sum(sizes) == len(lengths) and len(sizes) > 1

    def area(sz: list[int]) -> int:
        out, i = 0, 0
        for s in sz:
            out += s * lengths[i] ** 2
            i += s
        return out

    assert area(sizes) < area([len(lengths)])
    assert length_buckets([16] * 10) == [10]  # equal lengths: one bucket, no padding
    assert length_buckets([]) == []


def test_non_bert_backbones_fall_back_to_tokens() -> None:
    enc = toy_encoder(TINY)
    enc.__dict__["_supports_packing"] = False  # as for an encoder whose layers we cannot run packed
    tokens = enc.tokenize(_texts(3))
    assert enc.packed_inputs(tokens).keys() == tokens.keys()
    with pytest.raises(NotImplementedError):
        from xmeta.meta.cache import ActivationCache

        ActivationCache(enc)


def test_layout_is_built_once_per_lengths_tensor() -> None:
    from xmeta.models.packed import PackedLayout

    lengths = torch.tensor([5, 3, 7])
    a = PackedLayout.of(lengths)
    assert PackedLayout.of(lengths) is a  # the inner steps of an episode reuse it
    assert PackedLayout.of(lengths.clone()) is not a
    lengths[0] = 2  # an in-place change is noticed
    b = PackedLayout.of(lengths)
    assert b is not a and b.segment.numel() == 12


def test_inputs_are_typed_and_run_as_keyword_arguments() -> None:
    enc = toy_encoder(TINY)
    tokens = enc.tokenize(_texts(4))
    assert isinstance(tokens, TokenBatch) and tokens.input_ids is tokens["input_ids"]
    packed = enc.packed_inputs(tokens)
    assert isinstance(packed, PackedStates) and packed.start_layer == 0 and "attention_mask" not in packed
    padded = enc.hidden_inputs(tokens, layer=1, packed=False)
    assert isinstance(padded, HiddenStates) and dict(padded).keys() == {
        "hidden_states",
        "attention_mask",
        "start_layer",
    }
    ref = enc(**tokens)
    for batch in (packed, padded, padded.to("cpu")):
        torch.testing.assert_close(enc(**batch), ref)
    assert enc.cache_frozen_layers(packed, packed=True) is packed  # already past the tokens: unchanged
    torch.testing.assert_close(enc(**tokens.select(torch.tensor([2, 0]))), ref[[2, 0]])
    with pytest.raises(KeyError):
        packed["attention_mask"]
