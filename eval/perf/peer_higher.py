"""The second-order MAML episode written with the ``higher`` library, over the same model.

``higher.innerloop_ctx`` wraps the encoder (HF BERT + LoRA) in a functional copy and a
differentiable ``torch.optim.SGD`` over the LoRA tensors; the inner loop keeps the graph of every
step (``track_higher_grads``), then the query loss is back-propagated through it. Same episode,
head (prototypes, squared Euclidean), inner steps and learning rate as ``xmeta``'s ``maml``.

higher builds a subclass of every module class, which fails for peft's LoRA layers (their ABC
base gives no consistent MRO); each peft ``lora.Linear`` is therefore swapped, in place, for a
plain module computing the same ``base(x) + B(A(x)) * scale`` with the very same tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import higher
import torch
import torch.nn.functional as F
from common import (  # eval/perf/common.py
    autocast,
    build_model,
    build_setting,
    count_flops,
    load_episodes,
    reset_peak,
    rss_peak_mb,
    status_mb,
    token_counts,
)
from torch import nn

from xmeta.models.heads import proto_logits, prototypes


class PlainLoRALinear(nn.Module):
    def __init__(self, layer: nn.Module, adapter: str = "default") -> None:
        super().__init__()
        self.base = layer.base_layer
        self.lora_A = layer.lora_A[adapter]
        self.lora_B = layer.lora_B[adapter]
        self.scaling = float(layer.scaling[adapter])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


def plain_lora(module: nn.Module) -> list[nn.Parameter]:
    """Swap peft LoRA layers for ``PlainLoRALinear`` (same tensors); returns the LoRA parameters."""
    from peft.tuners.lora import Linear as PeftLoraLinear

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PeftLoraLinear):
                setattr(parent, name, PlainLoRALinear(child))
    return [p for p in module.parameters() if p.requires_grad]


def higher_maml_step(encoder: nn.Module, cfg) -> tuple[Callable, list[nn.Parameter]]:
    """``step(batch, precision) -> loss``: one second-order MAML episode, meta-gradient in ``.grad``."""
    if cfg.effective_head != "proto" or cfg.projection_dim or cfg.learn_inner_lr or cfg.inner_params != "all":
        raise ValueError("the higher peer implements plain MAML with the prototype head only")
    if not encoder.supports_double_backward:
        raise ValueError(
            "build the encoder with eager attention (xmeta.meta.encoder_config_for): higher differentiates twice"
        )
    lora = plain_lora(encoder)
    inner_opt = torch.optim.SGD(lora, lr=cfg.inner_lr)
    scale = 1.0 / cfg.effective_temperature

    def loss_of(z_support, labels, z, target, n_way) -> torch.Tensor:
        protos = prototypes(z_support, labels, n_way)
        return F.cross_entropy(proto_logits(z, protos, cfg.distance, scale), target)

    def step(batch, precision: str) -> float:
        with higher.innerloop_ctx(encoder, inner_opt, copy_initial_weights=False, track_higher_grads=True) as (
            fmodel,
            diffopt,
        ):
            for _ in range(cfg.inner_steps):
                with autocast(precision):
                    z = fmodel(**batch.support)
                    loss = loss_of(z, batch.support_labels, z, batch.support_labels, batch.n_way)
                diffopt.step(loss)
            with autocast(precision):
                zs, zq = fmodel(**batch.support), fmodel(**batch.query)
                outer = loss_of(zs, batch.support_labels, zq, batch.query_labels, batch.n_way)
            outer.backward()
        return float(outer)

    return step, lora


def measure_higher(spec: dict) -> dict:
    """The ``higher/*`` measurements of ``eval/perf/run.py`` (same fields as ``measure_episode``)."""
    import statistics
    import time

    from xmeta.meta import tokenize_episode

    enc_cfg, meta_cfg, shape, precision = build_setting({**spec, "algorithm": "maml"})
    n_warm, n_timed = spec.get("warmup", 1), spec["episodes"]
    episodes = load_episodes(shape, n_warm + n_timed, spec["seed"])
    model = build_model(enc_cfg, meta_cfg, spec.get("lora_std", 0.01), spec["seed"])
    model.eval()
    encoder = model.encoder
    step_fn, lora = higher_maml_step(encoder, meta_cfg)
    opt = torch.optim.AdamW(lora, lr=1e-4)
    rss_before = reset_peak()

    def step(ep) -> float:
        with autocast(precision):
            batch = tokenize_episode(encoder, ep)
        loss = step_fn(batch, precision)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    warm_losses = [step(episodes[i]) for i in range(n_warm)]
    times, losses = [], []
    for ep in episodes[n_warm:]:
        t0 = time.perf_counter()
        losses.append(step(ep))
        times.append(time.perf_counter() - t0)
    peak, episode_peak = rss_peak_mb(), status_mb("VmHWM")
    tokens = [token_counts(encoder, ep) for ep in episodes]
    flops = [0]
    with count_flops(flops):
        step(episodes[0])
    return {
        "seconds": times,
        "seconds_per_episode": statistics.median(times),
        "episodes_per_s": 1.0 / statistics.median(times),
        "losses": losses,
        "first_loss": warm_losses[0] if warm_losses else None,
        "peak_rss_mb": round(peak, 1),
        "episode_peak_rss_mb": episode_peak,
        "rss_before_episodes_mb": rss_before,
        "real_tokens": statistics.mean(t[0] for t in tokens[n_warm:]),
        "padded_tokens": statistics.mean(t[1] for t in tokens[n_warm:]),
        "flops_executed": flops[0] * statistics.mean(t[0] for t in tokens[n_warm:]) / tokens[0][0],
        "precision": precision,
        "attn_implementation": encoder.attn_implementation,
    }
