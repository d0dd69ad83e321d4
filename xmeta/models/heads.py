"""Few-shot heads: prototypes, distances, a meta-learned projection, the ProtoMAML linear head.

Distances are written by broadcasting, never with ``torch.cdist``: cdist has no double
backward, and second-order MAML differentiates through the distance twice. The episode
tensors are small (tens of rows), so the ``(n, m, d)`` difference tensor is cheap.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Distance = Literal["euclidean", "cosine"]


def squared_euclidean(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``(n, m)`` between rows of ``a (n, d)`` and ``b (m, d)``."""
    # The exact difference form, not ||a||^2 + ||b||^2 - 2ab: no cancellation, and twice differentiable.
    return (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)


def cosine_similarity_matrix(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pairwise cosine similarities ``(n, m)``."""
    return F.normalize(a, dim=-1, eps=eps) @ F.normalize(b, dim=-1, eps=eps).T


def prototypes(z: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Class means ``(n_way, d)`` of embeddings ``z (n, d)`` with labels in ``0..n_way-1``.

    Raises:
        ValueError: if a class has no example (its prototype would be undefined).
    """
    onehot = F.one_hot(labels, n_way).to(z.dtype)  # (n, N)
    counts = onehot.sum(0)
    if bool((counts == 0).any()):  # a host sync, but a missing class is a data bug worth stopping on
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"classes {missing} have no support example")
    return (onehot.T @ z) / counts.unsqueeze(1)


def proto_logits(z: Tensor, protos: Tensor, distance: Distance = "euclidean", scale: Tensor | float = 1.0) -> Tensor:
    """Logits ``(n, N)``: ``-scale * ||z - c||^2`` (euclidean) or ``scale * cos(z, c)`` (cosine)."""
    if distance == "euclidean":
        return -scale * squared_euclidean(z, protos)
    if distance == "cosine":
        return scale * cosine_similarity_matrix(z, protos)
    raise ValueError(f"unknown distance {distance!r}")


def linear_head_from_prototypes(
    protos: Tensor, distance: Distance = "euclidean", scale: Tensor | float = 1.0
) -> tuple[Tensor, Tensor]:
    """ProtoMAML's initial linear head ``(W, b)`` equal to the prototype classifier.

    Euclidean: ``-s||z - c||^2 = 2s c.z - s||c||^2 - s||z||^2``; the last term is the same for every
    class, so ``W = 2 s c``, ``b = -s ||c||^2`` gives the same softmax. Cosine: ``W = s c/||c||``,
    ``b = 0``, applied to normalised features (see ``head_features``).
    """
    if distance == "euclidean":
        return 2.0 * scale * protos, -scale * protos.pow(2).sum(-1)
    if distance == "cosine":
        return scale * F.normalize(protos, dim=-1), protos.new_zeros(protos.shape[0])
    raise ValueError(f"unknown distance {distance!r}")


def head_features(z: Tensor, distance: Distance) -> Tensor:
    """What a linear episode head sees: normalised embeddings for cosine, raw ones for euclidean."""
    return F.normalize(z, dim=-1) if distance == "cosine" else z


def linear_logits(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ W.T + b``."""
    return F.linear(x, weight, bias)


class ProtoHead(nn.Module):
    """Meta-learned head state: an optional projection ``d -> p`` and the logit scale (1/temperature).

    The projection starts orthogonal (an isometry when ``p == d``), so an untrained head keeps
    the pretrained embedding geometry and prototypes start where the frozen encoder puts them.

    Args:
        in_dim: embedding size ``d``.
        projection_dim: ``p``, or None for no projection.
        temperature: logits are divided by it (stored as ``log_scale = -log T``).
        learn_temperature: make ``log_scale`` a parameter (else a buffer).
    """

    def __init__(
        self, in_dim: int, projection_dim: int | None = None, temperature: float = 1.0, learn_temperature: bool = False
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.projection: nn.Linear | None = None
        if projection_dim is not None:
            self.projection = nn.Linear(in_dim, projection_dim)
            nn.init.orthogonal_(self.projection.weight)
            nn.init.zeros_(self.projection.bias)
        log_scale = torch.tensor(-math.log(temperature))
        if learn_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def out_dim(self) -> int | None:
        return None if self.projection is None else self.projection.out_features

    def forward(self, z: Tensor) -> Tensor:
        """Project embeddings (identity without a projection)."""
        return z if self.projection is None else self.projection(z)

    def scale(self) -> Tensor:
        return self.log_scale.exp()
