"""Tiny in-memory models for the tests: no download, each built from a config in well under a second.

* ``tiny_tokenizer`` + ``tiny_encoder``: a 2-layer BERT (the architecture class of
  multilingual-e5-small) with a WordLevel tokenizer over a given vocabulary, so the whole pipeline
  (tokenize, LoRA, pooling, heads, meta-gradients) runs exactly, in float64 where gradients are checked.
* ``tiny_bpe_tokenizer`` + ``tiny_causal_lm``: a byte-level BPE trained on a few sentences (spaces
  are real tokens, so the prefix/continuation boundary behaves like a real LLM tokenizer's) and a
  2-layer Gemma3 with one sliding-window layer and a window far shorter than a prompt, so the
  hybrid (sliding + full attention) KV cache of the real gemma-3-270m is exercised by unit tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

BERT_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def tiny_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A lower-casing whitespace WordLevel tokenizer with an XLM-R style ``<s> $A </s>`` template."""
    vocab = {tok: i for i, tok in enumerate(BERT_SPECIALS)}
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


# ---- causal LMs (the ICL scorer) ------------------------------------------------------------

LM_SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]

DEFAULT_CORPUS = (
    "Classify the topic of each sentence. Possible topics: science, travel, politics, sports.",
    "Sentence: The team won the match.\nTopic: sports",
    "Sentence: The minister gave a speech about the election.\nTopic: politics",
    "Sentence: We booked a hotel near the beach.\nTopic: travel",
    "Sentence: Cells divide and genes mutate.\nTopic: science",
    "Review: great film, I loved it. Sentiment: positive negative neutral N/A",
)


def tiny_bpe_tokenizer(corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (no prefix space) that prepends ``<bos>`` like Gemma/Llama do.

    Args:
        corpus: Sentences to learn merges from; any text still tokenizes (byte fallback).
        vocab_size: Upper bound on the vocabulary size.

    Returns:
        A fast tokenizer with ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>`` special tokens.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=LM_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )


def tiny_causal_lm(
    vocab_size: int,
    arch: Literal["gemma3", "llama"] = "gemma3",
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    sliding_window: int = 8,
    max_positions: int = 512,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> PreTrainedModel:
    """A randomly initialised small causal LM (deterministic for a given seed), in eval mode.

    Args:
        vocab_size: Must cover the tokenizer's vocabulary.
        arch: ``"gemma3"`` alternates sliding-window and full attention layers; ``"llama"`` is all full.
        hidden: Hidden size.
        layers: Number of decoder layers.
        heads: Attention heads.
        kv_heads: Key/value heads (grouped-query attention when fewer than ``heads``).
        sliding_window: Gemma3 sliding-window length; keep it shorter than test prompts.
        max_positions: Context length (``max_position_embeddings``).
        seed: Torch seed for the random weights.
        dtype: Parameter dtype.

    Returns:
        The model, in eval mode.
    """
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    if arch == "gemma3":
        layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
        cfg = Gemma3TextConfig(**common, sliding_window=sliding_window, layer_types=layer_types)
        model: PreTrainedModel = Gemma3ForCausalLM(cfg)
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        raise ValueError(f"unknown tiny arch {arch!r}; use 'gemma3' or 'llama'")
    # Random init gives near-uniform next-token distributions; a larger output scale makes label
    # scores differ clearly so argmax/calibration tests are not decided by float noise.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)
    return model.to(dtype).eval()
