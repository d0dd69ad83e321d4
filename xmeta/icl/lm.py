"""Loading causal LMs for in-context learning: zoo names, hub ids and local directories.

Names go through ``xmeta.models.zoo.resolve_model`` (imported lazily so that this package can be
used, and tested with in-memory models, without the zoo's heavier dependencies).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from xmeta.errors import ModelUnavailableError

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"fp32"``, ``"bfloat16"``/``"bf16"``, ``"float16"``/``"fp16"`` or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}") from None


def default_device() -> torch.device:
    """The device accelerate assigns to this process (cuda:<local rank>, mps or cpu)."""
    from accelerate import PartialState  # lazy: initialising the state reads the environment

    return torch.device(PartialState().device)


def resolve_model_path(name_or_path: str) -> str:
    """A local directory for a zoo name, hub id or path (the zoo decides; paths pass through).

    Raises:
        ModelUnavailableError: The zoo cannot provide the model.
    """
    try:
        from xmeta.models.zoo import resolve_model
    except ImportError:
        # The zoo is optional here: without it, only local directories and hub ids work.
        logger.debug("xmeta.models.zoo unavailable; using %r as a path or hub id", name_or_path)
        return name_or_path
    return str(resolve_model(name_or_path))


def context_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None) -> int:
    """The longest sequence the model takes: ``max_position_embeddings`` (or the tokenizer's limit)."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    candidates = [getattr(config, a, None) for a in ("max_position_embeddings", "n_positions", "max_sequence_length")]
    if tokenizer is not None:
        # Tokenizers without a limit report a huge sentinel (int(1e30)); ignore those.
        candidates.append(getattr(tokenizer, "model_max_length", None))
    lengths = [int(c) for c in candidates if isinstance(c, int) and 0 < c < 10**9]
    if not lengths:
        raise ModelUnavailableError(f"cannot tell the context length of {type(model).__name__}; pass max_length")
    return min(lengths)


def load_causal_lm(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode on ``device``.

    Args:
        name_or_path: Zoo name (``"gemma-3-270m"``), hub id or local directory.
        dtype: Parameter dtype; bf16 halves memory, fp32 is the reference for equivalence tests.
        device: Defaults to accelerate's ``PartialState().device``.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        ModelUnavailableError: Neither the zoo nor transformers can load it.
    """
    path = resolve_model_path(str(name_or_path))
    torch_dtype = resolve_dtype(dtype)
    target = torch.device(device) if device is not None else default_device()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as err:
        raise ModelUnavailableError(f"cannot load causal LM {name_or_path!r} from {path!r}: {err}") from None
    logger.info("loaded %s (%s) on %s", name_or_path, torch_dtype, target)
    return model.to(target).eval(), tokenizer
