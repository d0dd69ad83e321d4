"""Tiny on-disk fixtures for the adapt tests: a 3-topic corpus in made-up languages, a 2-layer BERT,
a meta checkpoint per algorithm, and a tiny causal LM for the notebook's ICL baseline.

Everything is written in well under a second and runs on one CPU thread.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import tiny_encoder, tiny_tokenizer

from xmeta.artifacts import TrainingData
from xmeta.meta import MetaConfig, MetaModel, save_meta_model
from xmeta.models.encoder import Encoder, EncoderConfig

TOPICS = {"sport": "ball goal team match", "health": "doctor pill fever clinic", "money": "bank price coin market"}
FILLER = "the a of and to in is it".split()
LANGS = ("aaa_Latn", "bbb_Latn", "ccc_Latn")


def keywords(lang: str, label: str) -> list[str]:
    """Language-specific keyword forms of a topic (``ballc`` in ``ccc_Latn``)."""
    return [f"{w}{lang[:1]}" for w in TOPICS[label].split()]


def sentence(lang: str, label: str, g: torch.Generator) -> str:
    kw = keywords(lang, label)
    pick = torch.randint(0, len(kw), (2,), generator=g).tolist()
    fill = torch.randint(0, len(FILLER), (3,), generator=g).tolist()
    return " ".join([kw[pick[0]], *(FILLER[i] for i in fill), kw[pick[1]]])


def write_corpus(root: Path, sizes: dict[str, int] | None = None) -> Path:
    """``root/<lang>/<split>.tsv`` (text, label) for the three languages; returns ``root``."""
    sizes = sizes or {"train": 12, "dev": 8, "test": 8}
    g = torch.Generator().manual_seed(0)
    for lang in LANGS:
        (root / lang).mkdir(parents=True, exist_ok=True)
        for split, n in sizes.items():
            rows = ["text\tlabel"] + [f"{sentence(lang, label, g)}\t{label}" for label in TOPICS for _ in range(n)]
            (root / lang / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def vocabulary() -> list[str]:
    words = set(FILLER)
    for lang in LANGS:
        for label in TOPICS:
            words.update(keywords(lang, label))
    return sorted(words)


def write_encoder(directory: Path) -> Path:
    """A tiny BERT + WordLevel tokenizer saved as a HF directory (loadable by ``Encoder.from_config``)."""
    tok = tiny_tokenizer(vocabulary())
    model = tiny_encoder(len(tok), hidden=32, layers=2, heads=4, seed=0)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def encoder_config(model_dir: Path) -> EncoderConfig:
    return EncoderConfig(model=str(model_dir), text_prefix="", max_length=16, lora_r=2)


def write_meta_checkpoint(directory: Path, model_dir: Path, **meta: object) -> Path:
    """A meta checkpoint (untrained but non-trivial: LoRA B and the head perturbed) for ``MetaConfig(**meta)``."""
    encoder = Encoder.from_config(encoder_config(model_dir))
    model = MetaModel(encoder, MetaConfig(**meta))  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.meta_params().items():
            if "lora_B" in name or name.startswith("head."):
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return save_meta_model(model, directory, training=TrainingData("files", {"aaa_Latn": ("train",)}), step=0)


def write_causal_lm(directory: Path) -> Path:
    """A tiny Gemma3 causal LM + byte-level BPE tokenizer saved as a HF directory."""
    from tiny_models import tiny_bpe_tokenizer, tiny_causal_lm

    tok = tiny_bpe_tokenizer()
    model = tiny_causal_lm(len(tok), arch="gemma3", sliding_window=8)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def train_real_run(out: Path, data_dir: Path) -> Path:
    """A 2-step meta-training run of the head-only ProtoMAML recipe on the real encoder and SIB-200 (slow tests).

    Small settings (2 training languages, 1 episode per step, 2 queries per class, no validation):
    the point is a real ``final/`` directory in the recipe's format, not a good model.
    """
    from xmeta.cli import main as xmeta_main

    root = Path(__file__).resolve().parents[1]
    overrides = [f"output_dir={out}", f"data.data_dir={data_dir}", "data.train_langs=[eng_Latn,fra_Latn]",
                 "max_steps=2", "meta_batch_size=1", "val_every=0", "checkpoint_every=0", "data.q_query=2",
                 "encoder.max_length=64", "trackers=[]"]  # fmt: skip
    assert xmeta_main(["train", "--config", str(root / "recipes" / "configs" / "protomaml_head.yaml"), *overrides]) == 0
    return out
