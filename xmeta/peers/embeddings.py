"""Frozen sentence embeddings of the encoder, memoised per text (the probe's features)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from xmeta.errors import XmetaError
from xmeta.models.encoder import Encoder


class FrozenEmbedder:
    """Embeds texts with a frozen encoder, each distinct text once.

    A benchmark draws support and queries from the same few hundred sentences per language, so
    memoising by text makes every episode after the first nearly free. Texts are encoded sorted
    by length, so a batch pads to similar lengths.

    Args:
        encoder: The encoder (its prefix, pooling, normalisation and truncation apply).
        batch_size: Texts per forward pass.
        max_items: Bound on memoised texts (the memo is cleared when it would grow past it).
    """

    def __init__(self, encoder: Encoder, *, batch_size: int = 64, max_items: int = 500_000) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.encoder = encoder
        self.batch_size = batch_size
        self.max_items = max_items
        self._store: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), hidden)`` float32 embeddings.

        Raises:
            XmetaError: An embedding is not finite (corrupt weights; never passed on as features).
        """
        if isinstance(texts, str):
            raise TypeError("embed a sequence of texts, not a single string")
        missing = sorted({t for t in texts if t not in self._store}, key=len)
        if len(self._store) + len(missing) > self.max_items:
            self._store.clear()  # bounded memory; recomputing is always correct
            missing = sorted(set(texts), key=len)
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            for i in range(0, len(missing), self.batch_size):
                chunk = missing[i : i + self.batch_size]
                emb = self.encoder(**self.encoder.tokenize(chunk)).float().cpu().numpy()
                if not np.isfinite(emb).all():
                    raise XmetaError(
                        f"non-finite sentence embeddings from encoder {self.encoder.cfg.model!r}: its weights are "
                        "corrupt or overflowed; run `xmeta models verify` or re-pull the model"
                    )
                self._store.update(zip(chunk, emb))
        finally:
            self.encoder.train(was_training)
        if not texts:
            return np.zeros((0, self.encoder.hidden_size), dtype=np.float32)
        return np.stack([self._store[t] for t in texts])
