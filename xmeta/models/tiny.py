"""Tiny in-memory models for tests and examples: no download, built from a config in seconds.

The encoder is a 2-layer BERT (the same architecture class as multilingual-e5-small) with a
WordLevel tokenizer over a given vocabulary, so the whole pipeline (tokenize, LoRA, pooling,
heads, meta-gradients) can be exercised exactly, in float64 where gradients are checked.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def tiny_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A lower-casing whitespace WordLevel tokenizer with an XLM-R style ``<s> $A </s>`` template."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for w in words:
        vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def tiny_encoder(
    vocab_size: int,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "eager",
) -> BertModel:
    """A randomly initialised small BERT encoder (deterministic for a given seed)."""
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
        pad_token_id=0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    cfg._attn_implementation = attn_implementation
    model = BertModel(cfg, add_pooling_layer=False)
    return model.to(dtype).eval()
