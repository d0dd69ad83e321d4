"""``FinetuneLearner``: fresh LoRA adapters and a linear head trained on the support set alone.

The transfer-learning baseline of the benchmark: no meta-training, Adam on the support set. The
head starts as ProtoMAML's (``LinearProtoHead``: equal to the prototype classifier of the
pretrained encoder, since LoRA B = 0 at init), so step 0 equals ``FrozenProtoLearner``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from xmeta.interfaces import Example, label_names_of
from xmeta.meta.config import MetaConfig
from xmeta.meta.functional import Params, encoder_features, logit_scale, project
from xmeta.meta.learners import EpisodePredictor, support_inputs
from xmeta.meta.maml import AdaptedState, episode_logits
from xmeta.meta.model import MetaModel
from xmeta.meta.modes import eval_mode, seeded
from xmeta.models.encoder import Encoder
from xmeta.models.heads import LinearProtoHead


@dataclass
class FinetuneConfig:
    """Support-set fine-tuning (the transfer-learning baseline).

    Attributes:
        steps: Adam steps on the support set.
        lr: learning rate of the fresh LoRA adapters.
        head_lr: learning rate of the prototype-initialised linear head.
        weight_decay: Adam weight decay (L2).
        batch_size: support examples per step; None = the whole support set.
        distance: geometry of the head's prototype init.
        temperature: logit temperature of the head init; None = the distance's default.
    """

    steps: int = 20
    lr: float = 1e-3
    head_lr: float = 1e-2
    weight_decay: float = 0.0
    batch_size: int | None = None
    distance: Literal["euclidean", "cosine"] = "euclidean"
    temperature: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.lr <= 0 or self.head_lr <= 0:
            raise ValueError(f"lr and head_lr must be > 0, got {self.lr}, {self.head_lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def fresh_lora(params: Params, generator: torch.Generator) -> Params:
    """Re-initialised adapter tensors as peft does: A ~ U(+-1/sqrt(fan_in)) (kaiming a=sqrt(5)), B = 0."""
    out = {}
    for n, p in params.items():
        if "lora_A" in n:
            bound = 1.0 / math.sqrt(p.shape[1])
            t = torch.empty(p.shape, dtype=p.dtype).uniform_(-bound, bound, generator=generator).to(p.device)
        else:
            t = torch.zeros_like(p)
        out[n] = t.requires_grad_(True)
    return out


class FinetuneLearner:
    """Fine-tune fresh LoRA adapters and a linear head on the support set alone.

    The head starts as the prototype classifier of the pretrained encoder (LoRA B = 0 at init),
    so step 0 equals ``FrozenProtoLearner``; Adam then trains adapters and head together.

    Args:
        encoder: pretrained encoder with LoRA adapters (their current values are ignored).
        cfg: fine-tuning settings.
        batch_size: texts per forward pass when predicting.
    """

    head = LinearProtoHead  # equal to the prototype classifier at step 0

    def __init__(self, encoder: Encoder, cfg: FinetuneConfig | None = None, *, batch_size: int = 64) -> None:
        self.cfg = cfg or FinetuneConfig()
        # The encoder and the logit scale (temperature) of the prototype classifier the head starts as.
        self.model = MetaModel(
            encoder, MetaConfig(algorithm="protonet", distance=self.cfg.distance, temperature=self.cfg.temperature)
        )
        self.batch_size = batch_size

    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> EpisodePredictor:
        label_names = label_names_of(support)
        enc, distance = self.model.encoder, self.cfg.distance
        batch, labels = support_inputs(enc, support)
        gen = torch.Generator().manual_seed(seed)
        lora = fresh_lora({n: p for n, p in self.model.meta_params().items() if "lora_" in n}, gen)
        with eval_mode(self.model), seeded(seed, enc.device), torch.enable_grad():
            z = project(self.model, lora, encoder_features(self.model, lora, batch))
            scale = logit_scale(self.model, lora)
            init = self.head.from_support(z, labels, len(label_names), distance=distance, scale=scale)
            head = init.map(lambda t: t.detach().requires_grad_(True))
            groups = [{"params": list(head.tensors.values()), "lr": self.cfg.head_lr}]
            if lora:
                groups.append({"params": list(lora.values()), "lr": self.cfg.lr})
            opt = torch.optim.Adam(groups, weight_decay=self.cfg.weight_decay)
            n, bs = len(support), self.cfg.batch_size or len(support)
            for _ in range(self.cfg.steps):
                idx = torch.randperm(n, generator=gen)[:bs].to(enc.device) if bs < n else None
                sub = batch if idx is None else batch.select(idx)
                target = labels if idx is None else labels[idx]
                logits = episode_logits(self.model, AdaptedState(lora, head), sub)
                loss = F.cross_entropy(logits, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        state = AdaptedState(lora, head).detach()
        return EpisodePredictor(self.model, state, label_names, batch_size=self.batch_size)
