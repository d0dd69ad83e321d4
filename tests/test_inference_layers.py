"""Prediction layers (``xmeta.models.inference``): fused Q/K/V, LoRA merged or folded in, oneDNN
GEMMs with bias/GELU/residual epilogues. They must compute what the encoder computes: exactly (up
to float rounding) in float64/float32, within bf16 rounding in bf16, on packed and padded inputs,
with adapter tensors passed in ``params``; and step aside (None) where they cannot."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from tiny_models import tiny_encoder, tiny_tokenizer
from torch.func import functional_call
from torch.nn import functional as F
from toy_task import randomize_adapters, toy_encoder, toy_text

from xmeta.models.encoder import Encoder
from xmeta.models.inference import FusedLinear, InferenceLayers, LinearWeights, effective_linear
from xmeta.models.inference import onednn_linear_available as onednn_here
from xmeta.models.inputs import PackedStates

ONEDNN = onednn_here(torch.bfloat16, torch.device("cpu"))


def _texts(n: int = 12, seed: int = 0) -> list[str]:
    rng = random.Random(seed)  # 1..4 keyword groups: lengths vary, so packed batches have several buckets
    return [" ".join(toy_text(rng.randrange(3), rng, n_noise=rng.randrange(1, 12)) for _ in range(1 + i % 3))
            for i in range(n)]  # fmt: skip


def _encoder(dtype: str = "float64", *, top_layers: int | None = None, targets=("query", "value")) -> Encoder:
    base = toy_encoder(hidden=32, layers=3)
    cfg = dataclasses.replace(base.cfg, dtype=dtype, lora_top_layers=top_layers, target_modules=targets)
    enc = toy_encoder(cfg, hidden=32, layers=3)
    randomize_adapters(enc, std=0.3, seed=1)
    return enc.eval()


def _reference(enc: Encoder, texts: list[str], params: dict | None = None) -> torch.Tensor:
    with torch.no_grad():
        return functional_call(enc, params or {}, args=(), kwargs=dict(enc.tokenize(texts)))


@pytest.mark.parametrize("targets", [("query", "value"), ("query", "key", "value", "dense")])
@pytest.mark.parametrize("top_layers", [None, 1])
def test_float64_layers_equal_the_encoder_on_packed_and_padded_inputs(targets, top_layers):
    enc = _encoder(top_layers=top_layers, targets=targets)
    texts = _texts()
    want = _reference(enc, texts)
    layers = InferenceLayers.build(enc, {}, torch.float64)
    assert layers is not None and not layers.onednn
    tokens = enc.tokenize(texts)
    packed = enc.packed_inputs(tokens)
    assert isinstance(packed, PackedStates) and len(set(packed.lengths.tolist())) > 3
    torch.testing.assert_close(layers(tokens), want, rtol=0, atol=1e-10)  # one grid, padded keys masked
    torch.testing.assert_close(layers(packed), want, rtol=0, atol=1e-10)  # length buckets
    start = enc.first_trainable_layer  # hidden states entering an upper layer (the activation cache's inputs)
    torch.testing.assert_close(layers(enc.hidden_inputs(tokens, layer=start)), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("quantum", [7, 256])
def test_padding_rows_to_a_quantum_changes_nothing(quantum):
    # oneDNN builds a kernel per GEMM shape: bf16 runs pad row counts to a multiple of ROW_QUANTUM
    enc = _encoder()
    texts = _texts()
    want = _reference(enc, texts)
    layers = InferenceLayers.build(enc, {}, torch.float64)
    layers.row_quantum = quantum
    tokens = enc.tokenize(texts)
    for inputs in (tokens, enc.packed_inputs(tokens)):
        torch.testing.assert_close(layers(inputs), want, rtol=0, atol=1e-10)


def test_tensors_in_params_replace_the_modules_own():
    enc = _encoder()
    texts = _texts()
    adapted = {n: p.detach() * 1.7 + 0.01 for n, p in enc.named_parameters() if "lora_" in n}
    want = _reference(enc, texts, adapted)
    assert not torch.allclose(want, _reference(enc, texts), atol=1e-3)  # the adapters matter here
    layers = InferenceLayers.build(enc, adapted, torch.float64)
    torch.testing.assert_close(layers(enc.tokenize(texts)), want, rtol=0, atol=1e-10)


def test_left_padding_is_packed_by_the_mask():
    enc = _encoder()
    enc.tokenizer.padding_side = "left"  # no fixed grid: the real tokens are packed by the mask
    texts = _texts()
    want = _reference(enc, texts)
    layers = InferenceLayers.build(enc, {}, torch.float64)
    torch.testing.assert_close(layers(enc.tokenize(texts)), want, rtol=0, atol=1e-10)


def test_merged_and_unmerged_lora_apply_the_same_linear():
    enc = _encoder()
    name, module = next((n, m) for n, m in enc.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
    x = torch.randn(5, module.base_layer.in_features, dtype=torch.float64)
    with torch.no_grad():
        want = module(x)
    merged = effective_linear(module, name, {}, merge=True)
    kept = effective_linear(module, name, {}, merge=False)
    assert not merged.lora and len(kept.lora) == 1
    for w in (merged, kept):
        torch.testing.assert_close(FusedLinear(w, torch.float64, onednn=False)(x), want, rtol=0, atol=1e-10)


@pytest.mark.skipif(not ONEDNN, reason="no oneDNN bf16 linear in this torch build")
@pytest.mark.parametrize(
    ("gelu", "residual"), [(None, False), (None, True), ("none", False), ("tanh", False), ("none", True)]
)
@pytest.mark.parametrize("lora", [False, True])
def test_onednn_linear_matches_f_linear_in_bf16(gelu, lora, residual):
    g = torch.Generator().manual_seed(0)
    w = LinearWeights(torch.randn(48, 32, generator=g), torch.randn(48, generator=g), [])
    if lora:
        w.lora.append((torch.randn(4, 32, generator=g), torch.randn(48, 4, generator=g) * 0.1))
    x = torch.randn(70, 32, generator=g).bfloat16()
    r = torch.randn(70, 48, generator=g).bfloat16() if residual else None
    want = F.linear(x.float(), w.weight, w.bias) + sum(x.float() @ a.T @ b.T for a, b in w.lora)  # act(...) + r
    want = want if gelu is None else F.gelu(want, approximate=gelu)
    want = want if r is None else want + r.float()
    for onednn, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        got = FusedLinear(w, dtype, gelu=gelu, onednn=onednn)(x.to(dtype), None if r is None else r.to(dtype))
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=6e-2)  # bf16: 8-bit mantissa, |y| up to ~20


def test_bf16_layers_are_within_bf16_rounding_of_fp32_and_of_autocast():
    enc = _encoder("float32")
    texts = _texts(24)
    want = _reference(enc, texts)
    layers = InferenceLayers.build(enc, {}, torch.bfloat16)
    assert layers.onednn == ONEDNN
    tokens = enc.tokenize(texts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_packed, got_grid = layers(enc.packed_inputs(tokens)), layers(tokens)
        autocast = _reference(enc, texts)
    for got in (got_packed, got_grid):
        assert got.dtype == torch.float32
        cos = F.cosine_similarity(got, want, dim=-1)
        assert cos.min() > 0.999, cos.min()
        # no further from fp32 than autocast's own rounding is, give or take
        err, err_autocast = (got - want).norm() / want.norm(), (autocast.float() - want).norm() / want.norm()
        assert err < 2 * err_autocast + 1e-3, (err, err_autocast)


def test_layers_step_aside_where_they_do_not_reproduce_the_encoder():
    tok = tiny_tokenizer(["a", "b"])
    backbone = tiny_encoder(len(tok), hidden=16, layers=1, heads=2)
    backbone.config.hidden_act = "relu"
    from transformers.activations import ACT2FN

    backbone.encoder.layer[0].intermediate.intermediate_act_fn = ACT2FN["relu"]
    enc = Encoder(backbone, tok, toy_encoder().cfg)
    assert InferenceLayers.build(enc, {}, torch.float64) is None  # an activation the GEMM epilogue lacks
    enc = _encoder()
    assert (
        InferenceLayers.build(enc, {"backbone.embeddings.word_embeddings.weight": torch.zeros(1)}, torch.float64)
        is None
    )
