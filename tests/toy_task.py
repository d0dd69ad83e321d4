"""A synthetic few-shot task and a tiny encoder for it (the meta-learning tests).

Each class owns a few keywords; a text is one or two keywords of its class hidden among noise
words. A random tiny encoder separates the classes only weakly, so meta-training has something
to learn (amplify keywords, suppress noise) within seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING

import torch
from tiny_models import tiny_encoder, tiny_tokenizer

from xmeta.interfaces import Episode, Example
from xmeta.models.encoder import Encoder, EncoderConfig

if TYPE_CHECKING:
    from xmeta.meta import MetaModel

N_CLASSES = 10
KEYWORDS_PER_CLASS = 4
N_NOISE = 40


def class_name(c: int) -> str:
    return f"topic{c}"


def keywords(c: int) -> list[str]:
    return [f"k{c}x{j}" for j in range(KEYWORDS_PER_CLASS)]


NOISE = [f"w{j}" for j in range(N_NOISE)]


def vocabulary() -> list[str]:
    return [w for c in range(N_CLASSES) for w in keywords(c)] + NOISE


def toy_text(c: int, rng: random.Random, n_keywords: int = 1, n_noise: int = 6) -> str:
    words = rng.sample(keywords(c), n_keywords) + rng.choices(NOISE, k=n_noise)
    rng.shuffle(words)
    return " ".join(words)


def toy_episode(
    index: int, *, seed: int = 0, n_way: int = 3, k_shot: int = 2, q_query: int = 3, lang: str = "toy_Latn"
) -> Episode:
    """A deterministic N-way K-shot episode over random classes (same (seed, index) -> same episode)."""
    rng = random.Random(seed * 1_000_003 + index)
    classes = rng.sample(range(N_CLASSES), n_way)

    def examples(split: str, per_class: int) -> tuple[Example, ...]:
        out = [
            Example(f"{split}-{index}-{i}-{j}", toy_text(c, rng), i, class_name(c), lang)
            for i, c in enumerate(classes)
            for j in range(per_class)
        ]
        return tuple(out)

    names = tuple(class_name(c) for c in classes)
    return Episode(index, lang, lang, names, examples("s", k_shot), examples("q", q_query), seed)


def toy_encoder(cfg: EncoderConfig | None = None, *, hidden: int = 16, layers: int = 2, seed: int = 0) -> Encoder:
    """A tiny random BERT encoder over the toy vocabulary (float64, no text prefix, LoRA r=2 by default)."""
    cfg = cfg or EncoderConfig(model="tiny", text_prefix="", lora_r=2, lora_alpha=2.0, dtype="float64")
    if cfg.text_prefix:
        cfg = dataclasses.replace(cfg, text_prefix="")  # the WordLevel vocabulary has no "query:"
    tok = tiny_tokenizer(vocabulary())
    backbone = tiny_encoder(len(tok), hidden=hidden, layers=layers, heads=2, seed=seed)
    return Encoder(backbone, tok, cfg)


def randomize_adapters(module: Encoder, std: float = 0.1, seed: int = 0) -> None:
    """Give every LoRA tensor (B included) a random value, in place.

    peft's default B = 0 makes A's gradient exactly zero on the first inner step, which hides
    bugs in gradient checks; tests perturb the adapters first.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)


def toy_meta_model(seed: int = 0, **cfg: object) -> MetaModel:
    """A ``MetaModel`` over ``toy_encoder`` (eager attention when ``cfg`` is second order) with
    randomised adapters (std 0.2): what the meta-gradient tests differentiate."""
    from xmeta.meta import MetaConfig, MetaModel, encoder_config_for

    meta = MetaConfig(**cfg)
    enc = toy_encoder(encoder_config_for(toy_encoder().cfg, meta), seed=seed)
    randomize_adapters(enc, std=0.2, seed=seed)
    return MetaModel(enc, meta)
