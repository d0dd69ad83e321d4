"""Meta-learning algorithms by short name.

Every algorithm runs through the same functional episode code (``xmeta.meta.maml``); a spec
only says whether there is an inner loop, which gradient order it uses and which episode heads
fit it. Look algorithms up with ``ALGORITHMS.get(name)`` (unknown names say "did you mean").
"""

from __future__ import annotations

from dataclasses import dataclass

from xmeta.models.heads import EPISODE_HEADS
from xmeta.registry import Registry

HEADS = tuple(EPISODE_HEADS.names())
"""Names of the episode heads (``xmeta.models.heads.EPISODE_HEADS``: each class says what it does)."""


@dataclass(frozen=True)
class AlgorithmSpec:
    """What distinguishes one algorithm of the family.

    Attributes:
        name: registry name.
        inner_loop: whether the support set adapts parameters by gradient steps.
        first_order: the order it always uses, or None when configurable.
        default_first_order: the order used when configurable and not set.
        default_head: episode head when ``MetaConfig.head == "auto"``.
        heads: allowed episode heads.
        description: one line for ``xmeta`` help texts.
    """

    name: str
    inner_loop: bool
    first_order: bool | None
    default_first_order: bool
    default_head: str
    heads: tuple[str, ...]
    description: str


ALGORITHMS: Registry[AlgorithmSpec] = Registry("meta-learning algorithm")

for _spec in (
    AlgorithmSpec(
        "protonet",
        False,
        True,
        True,
        "proto",
        ("proto",),
        "Prototypical networks: no inner loop, prototype classifier.",
    ),
    AlgorithmSpec(
        "fomaml", True, True, True, "proto", HEADS, "First-order MAML: inner SGD, outer gradient at adapted params."
    ),
    AlgorithmSpec("maml", True, False, False, "proto", HEADS, "MAML with second-order meta-gradients."),
    AlgorithmSpec(
        "protomaml",
        True,
        None,
        True,
        "linear_proto",
        ("linear_proto",),
        "ProtoMAML: linear head initialised from prototypes, then MAML (first or second order).",
    ),
):
    ALGORITHMS.add(_spec.name, _spec)
