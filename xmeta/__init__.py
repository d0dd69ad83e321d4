"""xmeta: cross-lingual few-shot NLP with meta-learned multilingual encoders."""

from __future__ import annotations

__version__ = "0.1.0"
