"""Few-shot heads: prototypes, distances, a meta-learned projection, the episode heads.

- ``ProtoHead``: the meta-learned part shared by every episode (optional projection, logit scale).
- ``EpisodeHead`` subclasses, registered in ``EPISODE_HEADS`` by the names ``MetaConfig.head``
  takes: the classifier of one episode, built from its support set (prototypes, or a linear head).

Distances are written by broadcasting, never with ``torch.cdist``: cdist has no double
backward, and second-order MAML differentiates through the distance twice. The episode
tensors are small (tens of rows), so the ``(n, m, d)`` difference tensor is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmeta.registry import Registry

Distance = Literal["euclidean", "cosine"]

PROTOTYPES = "prototypes"
EPISODE_HEAD_WEIGHT = "episode_head.weight"
EPISODE_HEAD_BIAS = "episode_head.bias"
EPISODE_HEAD = (EPISODE_HEAD_WEIGHT, EPISODE_HEAD_BIAS)


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

    def forward(self, z: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """Project embeddings (identity without a projection).

        Args:
            z: embeddings ``(n, d)``.
            params: tensors to use instead of the module's own, by name (``projection.weight``,
                ``projection.bias``): the functional form the inner loop differentiates.
        """
        if self.projection is None:
            return z
        params = params or {}
        weight = params.get("projection.weight", self.projection.weight)
        return F.linear(z, weight, params.get("projection.bias", self.projection.bias))

    def scale(self, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """The logit scale ``1 / temperature`` (``log_scale`` from ``params`` if there)."""
        return (params or {}).get("log_scale", self.log_scale).exp()


_H = TypeVar("_H", bound="EpisodeHead")


class EpisodeHead:
    """The classifier of one episode over projected embeddings; its tensors are the episode state.

    A subclass owns its state's names and shapes (what an adapted artifact stores), how the
    state is set from the support set, and its logits. Register it with ``register_episode_head``.

    Attributes:
        name: registry name (``MetaConfig.head``).
        tensor_names: names of the state's tensors, in a params dict while the inner loop adapts
            them and in an adapted artifact's ``params.safetensors``.
        export_names: the same tensors' names in ``adapter/head.safetensors`` (plain-peft export).
        adapted: True: the state is set once from the pre-adaptation support embeddings and then
            adapted by the inner loop like any tensor in ``params``; False: it is refitted to the
            support embeddings at the current tensors (prototypes).
        tensors: the state, by name.
        distance: the geometry of the logits.
    """

    name: ClassVar[str]
    tensor_names: ClassVar[tuple[str, ...]]
    export_names: ClassVar[tuple[str, ...]]
    adapted: ClassVar[bool]

    def __init__(self, tensors: Mapping[str, Tensor], distance: Distance = "euclidean") -> None:
        missing = [n for n in self.tensor_names if n not in tensors]
        if missing:
            raise ValueError(f"the {self.name} head needs the tensors {missing}")
        self.tensors = {n: tensors[n] for n in self.tensor_names}
        self.distance = distance

    @classmethod
    def from_support(cls: type[_H], z: Tensor, labels: Tensor, n_way: int, *, distance: Distance, scale: Tensor) -> _H:
        """The head fitted to support embeddings ``z (n, d)`` with labels in ``0..n_way-1``."""
        raise NotImplementedError

    @classmethod
    def shapes(cls, n_way: int, dim: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the state's tensors for ``n_way`` classes and ``dim``-sized embeddings."""
        raise NotImplementedError

    def logits(self, z: Tensor, scale: Tensor) -> Tensor:
        """Logits ``(n, N)`` of embeddings ``z`` (``scale``: the logit scale, 1 / temperature)."""
        raise NotImplementedError

    def map(self: _H, fn: Callable[[Tensor], Tensor]) -> _H:
        """The same head with ``fn`` applied to every tensor (detach, move, cast)."""
        return type(self)({n: fn(t) for n, t in self.tensors.items()}, self.distance)

    def exported(self) -> dict[str, Tensor]:
        """The state under its ``export_names``."""
        return {e: self.tensors[n] for n, e in zip(self.tensor_names, self.export_names)}


EPISODE_HEADS: Registry[type[EpisodeHead]] = Registry("episode head")


def register_episode_head(cls: type[_H]) -> type[_H]:
    """Class decorator: add an ``EpisodeHead`` subclass to ``EPISODE_HEADS`` under its ``name``."""
    EPISODE_HEADS.add(cls.name, cls)
    return cls


@register_episode_head
class PrototypeHead(EpisodeHead):
    """Prototype classifier: class means of the support embeddings, recomputed with the adapted tensors."""

    name = "proto"
    tensor_names = (PROTOTYPES,)
    export_names = (PROTOTYPES,)
    adapted = False

    @classmethod
    def from_support(cls, z: Tensor, labels: Tensor, n_way: int, *, distance: Distance, scale: Tensor) -> PrototypeHead:
        return cls({PROTOTYPES: prototypes(z, labels, n_way)}, distance)

    @classmethod
    def shapes(cls, n_way: int, dim: int) -> dict[str, tuple[int, ...]]:
        return {PROTOTYPES: (n_way, dim)}

    def logits(self, z: Tensor, scale: Tensor) -> Tensor:
        return proto_logits(z, self.tensors[PROTOTYPES], self.distance, scale)


class LinearHead(EpisodeHead):
    """A linear episode head ``W, b`` adapted in the inner loop (cosine: over normalised embeddings)."""

    tensor_names = EPISODE_HEAD
    export_names = ("linear.weight", "linear.bias")
    adapted = True

    @classmethod
    def shapes(cls, n_way: int, dim: int) -> dict[str, tuple[int, ...]]:
        return {EPISODE_HEAD_WEIGHT: (n_way, dim), EPISODE_HEAD_BIAS: (n_way,)}

    def logits(self, z: Tensor, scale: Tensor) -> Tensor:
        w, b = (self.tensors[n] for n in EPISODE_HEAD)
        return linear_logits(head_features(z, self.distance), w, b)


@register_episode_head
class LinearZeroHead(LinearHead):
    """Linear head initialised at zero (labels are permuted per episode, so a meta-learned
    class-specific init would be meaningless)."""

    name = "linear_zero"

    @classmethod
    def from_support(
        cls, z: Tensor, labels: Tensor, n_way: int, *, distance: Distance, scale: Tensor
    ) -> LinearZeroHead:
        # The meta-model's dtype and device (the logit scale's), whatever autocast made of z.
        weight, bias = scale.new_zeros(n_way, z.shape[-1]), scale.new_zeros(n_way)
        return cls({EPISODE_HEAD_WEIGHT: weight, EPISODE_HEAD_BIAS: bias}, distance)


@register_episode_head
class LinearProtoHead(LinearHead):
    """ProtoMAML's linear head, initialised equal to the prototype classifier."""

    name = "linear_proto"

    @classmethod
    def from_support(
        cls, z: Tensor, labels: Tensor, n_way: int, *, distance: Distance, scale: Tensor
    ) -> LinearProtoHead:
        w, b = linear_head_from_prototypes(prototypes(z, labels, n_way), distance, scale)
        return cls({EPISODE_HEAD_WEIGHT: w, EPISODE_HEAD_BIAS: b}, distance)
