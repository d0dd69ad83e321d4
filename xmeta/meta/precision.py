"""Inference precision: fp32 (exact, the default) or bf16 autocast for adapting and predicting."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from xmeta.errors import InputError

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def inference_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for adapting and predicting at ``precision``.

    ``bf16`` roughly halves the time of an encoder forward on CPUs with bf16 units (AVX512-BF16,
    AMX) and on GPUs (prediction with fixed weights goes further: ``xmeta.models.inference``); on
    the standard benchmark it changed 0.6% of the shipped model's predictions and its mean
    accuracy by at most 0.01 points (``eval/results/bf16_check/comparison.md``). ``fp32`` is exact
    and the default here; ``xmeta predict`` defaults to ``auto``.

    Raises:
        InputError: for another precision name.
    """
    check_precision(precision)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# module -> {parameter name: ((parameter, its storage, its _version when cast, autocast dtype), the cast)}
_FROZEN_CASTS: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[tuple, Tensor]]]
_FROZEN_CASTS = weakref.WeakKeyDictionary()


def autocast_frozen_weights(module: nn.Module, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Copies of ``module``'s frozen ``nn.Linear`` weights and biases in the autocast dtype, made once.

    Autocast casts a float32 weight to bf16 at every call unless it is a leaf that requires grad;
    the frozen backbone's weights are neither, so every forward (every inner step, every batch
    of ``xmeta predict``, every cache-fill tile) cast all of them again (~5% of a bf16
    prediction on a 2-core CPU). Passing these copies to ``torch.func.functional_call`` beside
    ``params`` gives bitwise the same outputs: autocast rounds them the same way and casts a
    tensor already in its dtype as a no-op. A copy is redone when its parameter changes (in
    place: ``_version``; moved or reassigned: its storage). Names in ``params`` (adapters,
    trainable tensors) are left to ``params``. Empty without autocast.
    """
    first = next(module.parameters(), None)
    if first is None or not torch.is_autocast_enabled(first.device.type):
        return {}
    dtype = torch.get_autocast_dtype(first.device.type)
    cache = _FROZEN_CASTS.setdefault(module, {})
    out = {}
    for path, sub in module.named_modules():
        if not isinstance(sub, nn.Linear):
            continue
        for leaf, t in sub.named_parameters(recurse=False):
            name = f"{path}.{leaf}"
            if name in params or t.requires_grad or not t.is_floating_point():
                continue
            key = (t, t.data_ptr(), t._version, dtype)  # ``.to(device)`` swaps the storage
            hit = cache.get(name)
            if hit is None or hit[0][0] is not t or hit[0][1:] != key[1:]:
                hit = cache[name] = (key, t.detach().to(dtype))
            out[name] = hit[1]
    return out


def check_precision(precision: str) -> None:
    """Raise ``InputError`` unless ``precision`` is one of ``PRECISIONS``."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
