"""``MetaModel``: the encoder, the meta-learned head state and (Meta-SGD) inner learning rates."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from xmeta.meta.config import MetaConfig
from xmeta.meta.functional import Params
from xmeta.models.encoder import Encoder, EncoderConfig, lora_layer_of
from xmeta.models.heads import ProtoHead

_NOT_ADAPTED = ("head.log_scale",)  # the temperature is meta-learned only, never adapted per episode


def encoder_config_for(encoder: EncoderConfig, meta: MetaConfig) -> EncoderConfig:
    """The encoder config to build for meta-training with ``meta``: eager attention when it is second order.

    Fused SDPA kernels have no double backward, so second-order meta-gradients need the eager
    (written-out) attention; first order keeps the configured, faster kernel.
    """
    if meta.second_order and encoder.attn_implementation != "eager":
        return dataclasses.replace(encoder, attn_implementation="eager")
    return encoder


def lr_key(name: str) -> str:
    """``inner_lrs`` key for a parameter name (module attribute names cannot contain dots)."""
    return name.replace(".", "__")


class MetaModel(nn.Module):
    """Everything meta-training updates, around a frozen encoder.

    Meta-parameters (``meta_params()``) are the LoRA adapters, the head's projection and learned
    temperature (when configured), and the Meta-SGD inner learning rates (when configured).

    The encoder is used as built, never reconfigured: meta-training a second-order config
    (``meta_step_loss``) needs one built with eager attention (``encoder_config_for``), while
    adapting and predicting (first order) run with any.

    Args:
        encoder: the encoder (its backbone stays frozen).
        cfg: the algorithm settings.
    """

    def __init__(self, encoder: Encoder, cfg: MetaConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.cfg = cfg
        self.head = ProtoHead(
            encoder.hidden_size, cfg.projection_dim, cfg.effective_temperature, cfg.learn_temperature
        ).to(device=encoder.device, dtype=encoder.dtype)
        names = self.inner_param_names(cfg)
        if cfg.spec.inner_loop and not names:
            raise ValueError(
                f"inner_params={cfg.inner_params!r} selects no tensor to adapt "
                f"(candidates: {', '.join(self._adaptable_names(cfg)) or 'none'})"
            )
        self.inner_lrs = nn.ParameterDict()
        if cfg.learn_inner_lr:
            shapes = {n: tuple(p.shape) for n, p in self.named_parameters()}
            for n in names:
                self.inner_lrs[lr_key(n)] = nn.Parameter(
                    torch.full(
                        self._lr_shape(cfg, shapes.get(n)), cfg.inner_lr, dtype=encoder.dtype, device=encoder.device
                    )
                )

    @staticmethod
    def _lr_shape(cfg: MetaConfig, param_shape: tuple[int, ...] | None) -> tuple[int, ...]:
        """Shape of a learned inner learning rate (``MetaConfig.inner_lr_shape``).

        An adapted episode head's tensors (``param_shape`` None: their shape depends on the
        episode's number of classes) keep one rate per tensor in "element" mode.
        """
        if cfg.inner_lr_shape == "tensor_step":
            return (cfg.inner_steps,)
        if cfg.inner_lr_shape == "element" and param_shape is not None:
            return param_shape
        return ()

    def check_double_backward(self, cfg: MetaConfig | None = None) -> None:
        """Raise unless the encoder can differentiate twice where ``cfg`` (default ``self.cfg``) needs it.

        Raises:
            ValueError: a second-order config and an encoder on fused (SDPA) attention.
        """
        cfg = cfg or self.cfg
        if cfg.second_order and not self.encoder.supports_double_backward:
            raise ValueError(
                f"second-order meta-gradients ({cfg.algorithm}, first_order=False) need an encoder built with "
                f"eager attention, not {self.encoder.attn_implementation!r} (fused kernels have no double "
                "backward): build it from xmeta.meta.encoder_config_for(encoder_cfg, meta_cfg)"
            )

    @property
    def embed_dim(self) -> int:
        """Size of the embeddings the heads see (after the projection)."""
        return self.head.out_dim or self.encoder.hidden_size

    def meta_params(self) -> dict[str, nn.Parameter]:
        """The trainable tensors by name (the module's own Parameters: an optimizer updates them in place)."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def meta_state_dict(self) -> dict[str, Tensor]:
        """Meta-parameters plus the fixed temperature buffer: what a checkpoint must hold."""
        state = {n: p.detach() for n, p in self.meta_params().items()}
        state["head.log_scale"] = self.head.log_scale.detach()
        return state

    def load_meta_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Copy tensors into the meta-parameters; names and shapes must match exactly.

        Raises:
            ValueError: naming missing, unexpected or mis-shaped tensors.
        """
        own = dict(self.meta_params())
        own["head.log_scale"] = self.head.log_scale
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"meta-parameter names differ: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for n, t in state.items():
            if tuple(t.shape) != tuple(own[n].shape):
                raise ValueError(f"{n}: shape {tuple(t.shape)} != expected {tuple(own[n].shape)}")
        with torch.no_grad():
            for n, t in state.items():
                own[n].copy_(t)

    def _adaptable_names(self, cfg: MetaConfig) -> list[str]:
        names = [
            n
            for n, p in self.named_parameters()
            if p.requires_grad and not n.startswith("inner_lrs.") and n not in _NOT_ADAPTED
        ]
        head = cfg.episode_head
        if head.adapted:  # the episode head's tensors join the params dict while the inner loop adapts them
            names += list(head.tensor_names)
        return names

    def inner_param_names(self, cfg: MetaConfig | None = None) -> list[str]:
        """Names of the tensors the inner loop adapts under ``cfg.inner_params``."""
        cfg = cfg or self.cfg
        names = self._adaptable_names(cfg)
        sel = cfg.inner_params
        if sel == "all":
            return names
        episode = cfg.episode_head.tensor_names
        is_head = [n.startswith("head.") or n in episode for n in names]
        if sel == "head":
            return [n for n, h in zip(names, is_head) if h]
        if sel.startswith("top:"):
            cut = self.encoder.num_layers - int(sel[4:])
            layers = [lora_layer_of(n) for n in names]
            return [n for n, h, i in zip(names, is_head, layers) if h or (i is not None and i >= cut)]
        pattern = re.compile(sel)
        return [n for n in names if pattern.search(n)]

    def inner_lrs_for(self, params: Mapping[str, Tensor], names: list[str], cfg: MetaConfig) -> dict:
        """Per-tensor inner learning rates: learned ones from ``params`` or ``cfg.inner_lr``.

        A learned rate is a 0-d tensor, a tensor shaped like its parameter (Meta-SGD), or one rate
        per inner step (``inner_lr_shape="tensor_step"``, indexed by ``sgd_inner_loop``).
        """
        if not cfg.learn_inner_lr:
            return dict.fromkeys(names, cfg.inner_lr)
        out = {}
        for n in names:
            key = "inner_lrs." + lr_key(n)
            if key in params:
                out[n] = params[key]
            elif lr_key(n) in self.inner_lrs:
                out[n] = self.inner_lrs[lr_key(n)]
            else:
                raise ValueError(f"no learned inner learning rate for {n}; build MetaModel with this config")
        return out

    def detached_params(self) -> Params:
        """The meta-parameters as detached tensors (for evaluation-time adaptation)."""
        return {n: p.detach() for n, p in self.meta_params().items()}
