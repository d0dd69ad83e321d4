"""Heads: prototypes, distances (twice differentiable, no cdist), ProtoMAML init, projection."""

from __future__ import annotations

import pytest
import torch

from xmeta.models.heads import (
    EPISODE_HEADS,
    ProtoHead,
    cosine_similarity_matrix,
    head_features,
    linear_head_from_prototypes,
    linear_logits,
    proto_logits,
    prototypes,
    squared_euclidean,
)


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    q = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    return z, labels, q


def test_prototypes_and_euclidean_logits_match_a_direct_loop() -> None:
    z, labels, q = _data()
    protos = prototypes(z, labels, 3)
    for k in range(3):
        torch.testing.assert_close(protos[k], z[labels == k].mean(0))
    logits = proto_logits(q, protos, "euclidean", scale=2.0)
    direct = torch.tensor([[-2.0 * float(((qi - c) ** 2).sum()) for c in protos] for qi in q], dtype=torch.float64)
    torch.testing.assert_close(logits, direct)
    cos = proto_logits(q, protos, "cosine", scale=10.0)
    direct_cos = torch.tensor(
        [[10.0 * float(qi @ c / (qi.norm() * c.norm())) for c in protos] for qi in q], dtype=torch.float64
    )
    torch.testing.assert_close(cos, direct_cos)
    torch.testing.assert_close(cosine_similarity_matrix(q, q).diagonal(), torch.ones(4, dtype=torch.float64))


def test_missing_class_is_an_error() -> None:
    z, _, _ = _data()
    with pytest.raises(ValueError, match="no support example"):
        prototypes(z, torch.zeros(9, dtype=torch.long), 2)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_linear_head_from_prototypes_equals_proto_classifier(distance: str) -> None:
    z, labels, q = _data(1)
    protos = prototypes(z, labels, 3)
    w, b = linear_head_from_prototypes(protos, distance, scale=3.0)
    lin = linear_logits(head_features(q, distance), w, b)
    ref = proto_logits(q, protos, distance, scale=3.0)
    torch.testing.assert_close(lin.softmax(-1), ref.softmax(-1))
    if distance == "euclidean":  # W = 2c, b = -||c||^2 at scale 1
        w1, b1 = linear_head_from_prototypes(protos)
        torch.testing.assert_close(w1, 2 * protos)
        torch.testing.assert_close(b1, -(protos**2).sum(-1))


def test_distance_is_twice_differentiable_without_cdist(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cdist(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.cdist has no double backward; do not use it")

    monkeypatch.setattr(torch, "cdist", no_cdist)
    z, labels, q = _data(2)
    z.requires_grad_(True)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(proto_logits(q, prototypes(x, labels, 3)), torch.tensor([0, 1, 2, 0]))

    (g,) = torch.autograd.grad(loss_fn(z), z, create_graph=True)
    v = torch.randn_like(z)
    (hv,) = torch.autograd.grad((g * v).sum(), z)  # Hessian-vector product: grad of grad
    eps = 1e-6
    zp = (z.detach() + eps * v).requires_grad_()
    zm = (z.detach() - eps * v).requires_grad_()
    (g_p,) = torch.autograd.grad(loss_fn(zp), zp)
    (g_m,) = torch.autograd.grad(loss_fn(zm), zm)
    torch.testing.assert_close(hv, (g_p - g_m) / (2 * eps), rtol=1e-6, atol=1e-8)
    assert squared_euclidean(q, q).diagonal().abs().max() == 0


def test_proto_head_projection_and_temperature() -> None:
    torch.manual_seed(0)
    head = ProtoHead(6, projection_dim=6, temperature=0.5).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    # orthogonal init (done in float32) is an isometry when p == d: prototype geometry starts unchanged
    torch.testing.assert_close(squared_euclidean(head(x), head(x)), squared_euclidean(x, x), rtol=1e-5, atol=1e-6)
    assert float(head.scale()) == pytest.approx(2.0)
    assert "log_scale" not in dict(head.named_parameters())
    learned = ProtoHead(6, temperature=0.1, learn_temperature=True)
    assert "log_scale" in dict(learned.named_parameters()) and learned(x) is x
    with pytest.raises(ValueError):
        ProtoHead(6, temperature=0.0)


@pytest.mark.parametrize("name", EPISODE_HEADS.names())
def test_episode_heads_own_their_state_shapes_and_logits(name: str) -> None:
    head_cls = EPISODE_HEADS.get(name)
    z, labels, q = _data(3)
    scale = torch.tensor(2.0, dtype=torch.float64)
    head = head_cls.from_support(z, labels, 3, distance="cosine", scale=scale)
    assert {n: tuple(t.shape) for n, t in head.tensors.items()} == head_cls.shapes(3, 5)
    assert set(head.tensors) == set(head_cls.tensor_names) and len(head.exported()) == len(head_cls.tensor_names)
    assert head.logits(q, scale).shape == (4, 3)
    moved = head.map(lambda t: t.float())
    assert type(moved) is head_cls and moved.distance == "cosine"
    assert all(t.dtype == torch.float32 for t in moved.tensors.values())
    with pytest.raises(ValueError, match="needs the tensors"):
        head_cls({})


def test_episode_head_names_and_defaults() -> None:
    assert EPISODE_HEADS.names() == ["linear_proto", "linear_zero", "proto"]
    assert EPISODE_HEADS.get("proto").tensor_names == ("prototypes",)  # artifact names never change
    assert EPISODE_HEADS.get("linear_proto").tensor_names == ("episode_head.weight", "episode_head.bias")
    assert EPISODE_HEADS.get("linear_zero").export_names == ("linear.weight", "linear.bias")
    with pytest.raises(KeyError, match="Did you mean 'proto'"):
        EPISODE_HEADS.get("protoo")
    z, labels, q = _data(4)
    one = torch.tensor(1.0, dtype=torch.float64)
    zero = EPISODE_HEADS.get("linear_zero").from_support(z, labels, 3, distance="euclidean", scale=one)
    assert zero.logits(q, one).abs().sum() == 0  # uniform before any inner step
    proto = EPISODE_HEADS.get("proto").from_support(z, labels, 3, distance="euclidean", scale=one)
    expected = proto_logits(q, prototypes(z, labels, 3), "euclidean", 3.0)
    torch.testing.assert_close(proto.logits(q, 3 * one), expected)


def test_proto_head_functional_tensors_override_its_own() -> None:
    torch.manual_seed(1)
    head = ProtoHead(5, projection_dim=4, temperature=0.5).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    w, b = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(head(x, {"projection.weight": w, "projection.bias": b}), x @ w.T + b)
    torch.testing.assert_close(head(x, {}), head(x))
    assert float(head.scale({"log_scale": torch.tensor(0.0)})) == 1.0 and float(head.scale({})) == pytest.approx(2.0)
