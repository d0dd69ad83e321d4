"""Encoder wrapper: config validation, LoRA placement, pooling, functional_call, layer-wise forward."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import tiny_encoder, tiny_tokenizer
from torch.func import functional_call
from toy_task import randomize_adapters, toy_encoder, vocabulary

from xmeta.config import ConfigError, from_dict
from xmeta.models.encoder import Encoder, EncoderConfig, lora_layer_of

TINY = EncoderConfig(model="tiny", text_prefix="", lora_r=2, lora_alpha=2.0, dtype="float64")
TEXTS = ["k0x1 w3 w4", "w5 k1x2 w6 w7 w8 w9", "k2x0"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pooling": "max"},
        {"lora_r": -1},
        {"lora_dropout": 1.0},
        {"max_length": 1},
        {"layers_to_transform": (0,), "lora_top_layers": 1},
        {"lora_top_layers": 0},
        {"dtype": "int8"},
        {"attn_implementation": "flash"},
    ],
)
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        EncoderConfig(**kwargs)


def test_config_from_dict_names_bad_key() -> None:
    cfg = from_dict(EncoderConfig, {"target_modules": ["query", "key"], "layers_to_transform": [1]})
    assert cfg.target_modules == ("query", "key") and cfg.layers_to_transform == (1,)
    with pytest.raises(ConfigError, match="lora_rank"):
        from_dict(EncoderConfig, {"lora_rank": 4})


def test_lora_placement_and_frozen_backbone() -> None:
    enc = toy_encoder(dataclasses.replace(TINY, lora_top_layers=1))
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {lora_layer_of(n) for n in trainable} == {1}
    assert enc.lora_layers == (1,) and enc.first_trainable_layer == 1
    enc0 = toy_encoder(dataclasses.replace(TINY, lora_r=0))
    assert not any(p.requires_grad for p in enc0.parameters())
    with pytest.raises(ValueError, match="out of range"):
        toy_encoder(dataclasses.replace(TINY, layers_to_transform=(5,)))


def test_pooling_mean_cls_normalize() -> None:
    enc = toy_encoder()
    batch = enc.tokenize(TEXTS)
    assert batch["attention_mask"].sum(1).tolist() == [5, 8, 3]  # <s> ... </s>
    last = enc.backbone(**batch).last_hidden_state
    mean = torch.stack([last[i, : int(m.sum())].mean(0) for i, m in enumerate(batch["attention_mask"])])
    torch.testing.assert_close(enc(**batch), mean)
    enc.cfg = dataclasses.replace(enc.cfg, pooling="cls", normalize=True)
    out = enc(**batch)
    torch.testing.assert_close(out, torch.nn.functional.normalize(last[:, 0], dim=-1))


def test_text_prefix_is_prepended() -> None:
    enc = toy_encoder()
    enc.cfg = dataclasses.replace(enc.cfg, text_prefix="w1 ")
    ids = enc.tokenize(["k0x0"])["input_ids"][0].tolist()
    assert ids[1] == enc.tokenizer.convert_tokens_to_ids("w1")
    with pytest.raises(TypeError):
        enc.tokenize("a single string")


def test_functional_call_with_partial_dict_equals_forward() -> None:
    enc = toy_encoder()
    batch = enc.tokenize(TEXTS)
    lora = {n: p for n, p in enc.named_parameters() if p.requires_grad}
    torch.testing.assert_close(functional_call(enc, lora, args=(), kwargs=batch), enc(**batch))
    gen = torch.Generator().manual_seed(1)
    new = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3 for n, p in lora.items()}
    out = functional_call(enc, new, args=(), kwargs=batch)
    assert not torch.allclose(out, enc(**batch))  # the new adapter values are used ...
    with torch.no_grad():
        for n, p in lora.items():
            p.copy_(new[n])
    torch.testing.assert_close(out, enc(**batch), rtol=0, atol=1e-12)  # ... exactly as a real forward would


def test_forward_from_cached_hidden_states() -> None:
    enc = toy_encoder(dataclasses.replace(TINY, lora_top_layers=1))
    randomize_adapters(enc, seed=3)
    batch = enc.tokenize(TEXTS)
    h = enc.hidden_states_at(batch["input_ids"], batch["attention_mask"], layer=enc.first_trainable_layer)
    out = enc(hidden_states=h, attention_mask=batch["attention_mask"], start_layer=enc.first_trainable_layer)
    torch.testing.assert_close(out, enc(**batch))


def test_eager_attention_is_chosen_where_the_encoder_is_built() -> None:
    enc = toy_encoder()
    assert enc.attn_implementation == "sdpa" and not enc.supports_double_backward
    eager = toy_encoder(dataclasses.replace(TINY, attn_implementation="eager"))
    assert eager.attn_implementation == "eager" and eager.supports_double_backward


def test_from_config_loads_a_local_directory(tmp_path) -> None:
    tok = tiny_tokenizer(vocabulary())
    tiny_encoder(len(tok), hidden=16, heads=2).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    enc = Encoder.from_config(dataclasses.replace(TINY, model=str(tmp_path)))
    assert enc.dtype == torch.float64 and enc.num_layers == 2 and enc.hidden_size == 16
    assert enc.encode(TEXTS, batch_size=2).shape == (3, 16)
