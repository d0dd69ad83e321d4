"""Frozen sentence embeddings of the encoder, memoised per text (the probe's features)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from xmeta.errors import XmetaError
from xmeta.meta.memo import TextMemo
from xmeta.models.encoder import Encoder


class FrozenEmbedder(TextMemo[np.ndarray]):
    """Embeds texts with a frozen encoder, each distinct text once (``xmeta.meta.memo.TextMemo``).

    A benchmark draws support and queries from the same few hundred sentences per language, so
    memoising by text makes every episode after the first nearly free. Texts are encoded sorted
    by length, so a batch pads to similar lengths.

    Args:
        encoder: The encoder (its prefix, pooling, normalisation and truncation apply).
        batch_size: Texts per forward pass.
        max_items: Bound on memoised texts (the memo is cleared when it would grow past it).
    """

    def __init__(self, encoder: Encoder, *, batch_size: int = 64, max_items: int = 500_000) -> None:
        super().__init__(batch_size, max_items)
        self.encoder = encoder

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), hidden)`` float32 embeddings.

        Raises:
            XmetaError: An embedding is not finite (corrupt weights; never passed on as features).
        """
        if isinstance(texts, str):
            raise TypeError("embed a sequence of texts, not a single string")
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            embeddings = self.lookup(texts, self._embed)
        finally:
            self.encoder.train(was_training)
        if not texts:
            return np.zeros((0, self.encoder.hidden_size), dtype=np.float32)
        return np.stack(embeddings)

    def _embed(self, chunk: list[str]) -> np.ndarray:
        emb = self.encoder(**self.encoder.tokenize(chunk)).float().cpu().numpy()
        if not np.isfinite(emb).all():
            raise XmetaError(
                f"non-finite sentence embeddings from encoder {self.encoder.cfg.model!r}: its weights are "
                "corrupt or overflowed; run `xmeta models verify` or re-pull the model"
            )
        return emb
