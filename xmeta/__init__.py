"""xmeta: cross-lingual few-shot NLP with meta-learned multilingual encoders.

``xmeta.adapt(support, model="default", ...)`` and ``xmeta.load_predictor(dir)`` are loaded on
first use (PEP 562), so ``import xmeta`` stays cheap (no torch, no transformers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from xmeta.adaptation import adapt, load_predictor

__all__ = ["__version__", "adapt", "load_predictor"]


def __getattr__(name: str) -> Any:
    if name in ("adapt", "load_predictor"):
        return getattr(importlib.import_module("xmeta.adaptation"), name)
    raise AttributeError(f"module 'xmeta' has no attribute {name!r}")
