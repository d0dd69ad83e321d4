"""Memos of per-text values: each distinct text is computed once.

A benchmark draws support and queries from the same few hundred sentences per language (support
from dev, queries from test), so a learner whose encoder is fixed at test time computes each
sentence once. ``TextMemo`` is the shared mechanism (bounded, missing texts computed sorted by
length so a batch pads to similar lengths); ``FeatureMemo`` is the meta-learners' memo of encoder
features, ``xmeta.peers.embeddings.FrozenEmbedder`` the frozen probe's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

import torch
from torch import Tensor

from xmeta.meta.functional import encoder_features, subdict
from xmeta.meta.model import MetaModel
from xmeta.meta.modes import eval_mode
from xmeta.meta.precision import Precision, inference_precision
from xmeta.models.inference import InferenceLayers
from xmeta.models.inputs import Features

V = TypeVar("V")


class TextMemo(Generic[V]):
    """Values by text, each distinct text computed once (until the memo is full).

    Args:
        batch_size: texts per call of the compute function.
        max_items: bound on memoised texts (the memo is cleared when it would grow past it).
    """

    def __init__(self, batch_size: int = 64, max_items: int = 500_000) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_items = max_items
        self._store: dict[str, V] = {}

    def lookup(self, texts: Sequence[str], compute: Callable[[list[str]], Iterable[V]]) -> list[V]:
        """The values of ``texts``; ``compute(chunk)`` gives those of texts not seen before, in order.

        Missing texts are computed ``batch_size`` at a time, sorted by length (a batch then pads
        to similar lengths).
        """
        missing = sorted({t for t in texts if t not in self._store}, key=len)
        if len(self._store) + len(missing) > self.max_items:
            self._store.clear()  # bounded memory for long-lived learners; recomputing is always correct
            missing = sorted(set(texts), key=len)
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i : i + self.batch_size]
            self._store.update(zip(chunk, compute(chunk)))
        return [self._store[t] for t in texts]


class FeatureMemo(TextMemo[Tensor]):
    """Encoder features by text, for learners whose encoder tensors never change at test time.

    Frozen prototypes, ProtoNet and head-only (ANIL-style) adaptation encode every sentence
    with the same encoder (the model's own adapter tensors), so each is encoded once, through
    the prediction layers (``xmeta.models.inference``) prepared on first use from those tensors.
    """

    def __init__(
        self, model: MetaModel, batch_size: int = 64, max_items: int = 500_000, precision: Precision = "fp32"
    ) -> None:
        super().__init__(batch_size, max_items)
        self.model = model
        self.precision = precision

    @torch.no_grad()
    def batch(self, texts: Sequence[str]) -> Features:
        """``Features`` ``(len(texts), d)``, encoding only texts not seen before."""
        enc, params = self.model.encoder, self.model.detached_params()
        layers = self.inference_layers

        def encode(chunk: list[str]) -> Tensor:
            inputs = enc.packed_inputs(enc.tokenize(chunk))
            return layers(inputs) if layers is not None else encoder_features(self.model, params, inputs)

        with eval_mode(self.model), inference_precision(self.precision, enc.device):
            feats = self.lookup(texts, encode)
        return Features(torch.stack(feats))

    @functools.cached_property
    def inference_layers(self) -> InferenceLayers | None:
        """The encoder's prediction layers with the model's tensors, prepared once (None: general path)."""
        params = subdict(self.model.detached_params(), "encoder.")
        return InferenceLayers.for_precision(self.model.encoder, params, self.precision)
