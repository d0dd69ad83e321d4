"""Typed encoder inputs: what a batch holds is its type, not the keys that happen to be present.

- ``TokenBatch``: token tensors from ``Encoder.tokenize``; every layer runs.
- ``HiddenStates``: padded hidden states entering layer ``start_layer`` (frozen layers skipped).
- ``PackedStates``: the same without padding, ``(tokens, hidden)`` plus per-sequence ``lengths``
  (BERT-style encoders; no compute is spent on padding).
- ``Features``: sentence embeddings already computed (a memo of a fixed encoder): no layer runs.

The first three are read-only mappings of their set fields, so ``encoder(**batch)`` and
``torch.func.functional_call(encoder, params, args=(), kwargs=dict(batch))`` call
``Encoder.forward`` with exactly those keyword arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

_B = TypeVar("_B", bound="_Inputs")


class _Inputs(Mapping[str, Any]):
    """Attribute access by field, and a mapping of the fields that are set (``encoder(**batch)``)."""

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None) if key in self._field_names() else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (n for n in self._field_names() if getattr(self, n) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    def to(self: _B, device: torch.device | str) -> _B:
        """The same inputs with every tensor on ``device``."""
        moved = {n: v.to(device) for n, v in self.items() if isinstance(v, Tensor)}
        return dataclasses.replace(self, **moved)  # type: ignore[type-var]


@dataclass(frozen=True, eq=False)
class TokenBatch(_Inputs):
    """Padded token tensors ``(batch, seq)``, as ``Encoder.tokenize`` returns them."""

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor | None = None

    def select(self, index: Tensor) -> TokenBatch:
        """The sequences at ``index`` (a subset of the batch, e.g. a random mini-batch)."""
        types = None if self.token_type_ids is None else self.token_type_ids[index]
        return TokenBatch(self.input_ids[index], self.attention_mask[index], types)


@dataclass(frozen=True, eq=False)
class HiddenStates(_Inputs):
    """Padded hidden states ``(batch, seq, hidden)`` entering layer ``start_layer``, with their mask."""

    hidden_states: Tensor
    attention_mask: Tensor
    start_layer: int


@dataclass(frozen=True, eq=False)
class PackedStates(_Inputs):
    """Hidden states of the real tokens only, ``(tokens, hidden)``, entering layer ``start_layer``."""

    hidden_states: Tensor
    lengths: Tensor
    start_layer: int


@dataclass(frozen=True, eq=False)
class Features:
    """Sentence embeddings ``(batch, hidden)`` already computed: valid only while the encoder tensors
    in use are the ones they were computed with (see ``xmeta.meta.FeatureMemo``)."""

    features: Tensor

    def to(self, device: torch.device | str) -> Features:
        return Features(self.features.to(device))


EncoderInputs = TokenBatch | HiddenStates | PackedStates
"""What ``Encoder.forward`` runs (``encoder(**inputs)``)."""

Batch = TokenBatch | HiddenStates | PackedStates | Features
"""What the meta-learning code embeds: encoder inputs, or features computed before."""
