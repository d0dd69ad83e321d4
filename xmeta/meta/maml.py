"""Episode-level meta-learning: adapt on the support set, score the query set, meta-gradients.

One functional code path serves every registered algorithm:

- ``protonet``: no inner loop; query logits against support prototypes.
- ``maml`` / ``fomaml``: SGD on the support loss over the selected tensors (second / first
  order), then the query loss at the adapted tensors. With the default ``proto`` head the support
  loss classifies the support set against its own prototypes and the query is classified against
  prototypes recomputed with the adapted tensors.
- ``protomaml``: a linear head initialised from the prototypes (equal to the prototype
  classifier), adapted together with the selected tensors. The outer gradient also flows through
  that initialisation into the encoder, in first order too (as in fo-Proto-MAML).

The recipe owns the optimizer and loop: it calls ``meta_step_loss`` (or ``meta_batch_loss`` /
``accumulate_meta_gradients``) and steps an optimizer over ``model.meta_params()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from xmeta.interfaces import Episode
from xmeta.meta.cache import ActivationCache
from xmeta.meta.config import MetaConfig
from xmeta.meta.functional import (
    EPISODE_HEAD_BIAS,
    EPISODE_HEAD_WEIGHT,
    Params,
    encoder_features,
    logit_scale,
    project,
    sgd_inner_loop,
)
from xmeta.meta.model import MetaModel
from xmeta.models.encoder import Encoder
from xmeta.models.heads import head_features, linear_head_from_prototypes, linear_logits, proto_logits, prototypes

Batch = Mapping[str, Tensor | int]  # token tensors, or cached hidden states (+ lengths if packed) + start_layer


@dataclass
class EpisodeTensors:
    """A tokenised episode: support/query token tensors and episode-local labels."""

    support: dict[str, Tensor]
    support_labels: Tensor
    query: dict[str, Tensor]
    query_labels: Tensor
    n_way: int

    def to(self, device: torch.device | str) -> EpisodeTensors:
        def move(batch: dict) -> dict:
            return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}

        return EpisodeTensors(
            move(self.support),
            self.support_labels.to(device),
            move(self.query),
            self.query_labels.to(device),
            self.n_way,
        )


def tokenize_episode(
    encoder: Encoder,
    episode: Episode,
    device: torch.device | None = None,
    *,
    cache_frozen: bool | ActivationCache = False,
) -> EpisodeTensors:
    """Tokenise an ``Episode`` once (re-use it across inner steps and the outer loss).

    Args:
        encoder: the encoder whose tokenizer (and frozen layers) prepare the batches.
        episode: the episode.
        device: where the tensors go; default the encoder's device.
        cache_frozen: ``False``: token tensors (every forward runs all layers). ``True``: the
            hidden states entering the lowest adapted layer, computed for this episode
            (``Encoder.cache_frozen_layers``), packed without padding on BERT-style encoders.
            An ``ActivationCache``: the same hidden states from a run-long cache keyed by example
            uid (computed once per example for the whole run). Same results in every case (up to
            float round-off, or the cache's storage precision); with adapters in the top L layers
            only, each forward then runs L layers instead of all.
    """
    device = device or encoder.device

    def labels(examples: Sequence) -> Tensor:
        return torch.tensor([e.label for e in examples], dtype=torch.long, device=device)

    if isinstance(cache_frozen, ActivationCache):
        cache_frozen.fill([*episode.support, *episode.query])  # computes only the examples not seen before
        support, query = (cache_frozen.batch(ex, device, fill=False) for ex in (episode.support, episode.query))
    else:

        def batch(examples: Sequence) -> dict:
            tokens = encoder.tokenize([e.text for e in examples], device)
            return encoder.cache_frozen_layers(tokens, packed=True) if cache_frozen else tokens

        support, query = batch(episode.support), batch(episode.query)
    return EpisodeTensors(support, labels(episode.support), query, labels(episode.query), episode.n_way)


@dataclass
class AdaptedState:
    """Result of adapting to one support set.

    Attributes:
        params: meta-params with the adapted tensors replaced (plus the episode head, if linear).
        prototypes: class prototypes for the ``proto`` head, else None.
        support_losses: detached support loss before each inner step.
    """

    params: Params
    prototypes: Tensor | None = None
    support_losses: list[Tensor] = field(default_factory=list)

    def detach(self) -> AdaptedState:
        protos = None if self.prototypes is None else self.prototypes.detach()
        return AdaptedState({k: v.detach() for k, v in self.params.items()}, protos, list(self.support_losses))


def head_logits(
    model: MetaModel, params: Mapping[str, Tensor], z: Tensor, protos: Tensor | None, cfg: MetaConfig
) -> Tensor:
    """Logits of embeddings ``z``: prototype classifier if ``protos`` is given, else the episode linear head."""
    if protos is not None:
        return proto_logits(z, protos, cfg.distance, logit_scale(model, params))
    return linear_logits(head_features(z, cfg.distance), params[EPISODE_HEAD_WEIGHT], params[EPISODE_HEAD_BIAS])


def episode_logits(model: MetaModel, state: AdaptedState, batch: Batch, cfg: MetaConfig | None = None) -> Tensor:
    """Logits ``(n, N)`` of a token batch under an adapted state."""
    cfg = cfg or model.cfg
    z = project(model, state.params, encoder_features(model, state.params, batch))
    return head_logits(model, state.params, z, state.prototypes, cfg)


def adapt_episode(
    model: MetaModel,
    params: Mapping[str, Tensor],
    support: Batch,
    support_labels: Tensor,
    n_way: int,
    cfg: MetaConfig | None = None,
    *,
    steps: int | None = None,
    first_order: bool | None = None,
) -> AdaptedState:
    """Run the algorithm's adaptation on a tokenised support set (differentiably).

    Args:
        model: the meta-model (its module tensors are read, never modified).
        params: meta-parameters by name, e.g. ``model.meta_params()`` (meta-training) or
            ``model.detached_params()`` (evaluation).
        support: token tensors of the support set; ``support_labels`` in ``0..n_way-1``.
        n_way: number of classes.
        cfg: algorithm settings; default ``model.cfg``.
        steps: inner steps; default ``cfg.inner_steps`` (0 for protonet).
        first_order: default ``cfg.effective_first_order``.
    """
    cfg = cfg or model.cfg
    head = cfg.effective_head
    steps = (cfg.inner_steps if steps is None else steps) if cfg.spec.inner_loop else 0
    first_order = cfg.effective_first_order if first_order is None else first_order
    names = model.inner_param_names(cfg) if steps > 0 else []
    adapts_encoder = any(n.startswith("encoder.") for n in names)

    feats0: Tensor | None = None
    if head != "proto" or not adapts_encoder:
        # Pre-adaptation support embeddings: the ProtoMAML head init, and the features every inner
        # step reuses when only head tensors adapt (ANIL-style: one encoder pass per episode).
        feats0 = encoder_features(model, params, support)
    fast: Params = dict(params)
    if head == "linear_proto":
        protos0 = prototypes(project(model, params, feats0), support_labels, n_way)
        w, b = linear_head_from_prototypes(protos0, cfg.distance, logit_scale(model, params))
        fast[EPISODE_HEAD_WEIGHT], fast[EPISODE_HEAD_BIAS] = w, b
    elif head == "linear_zero":
        like = next(iter(model.encoder.parameters()))
        fast[EPISODE_HEAD_WEIGHT] = like.new_zeros(n_way, model.embed_dim)
        fast[EPISODE_HEAD_BIAS] = like.new_zeros(n_way)

    def support_loss(p: Params) -> Tensor:
        feats = encoder_features(model, p, support) if adapts_encoder else feats0
        z = project(model, p, feats)
        protos = prototypes(z, support_labels, n_way) if head == "proto" else None
        return F.cross_entropy(head_logits(model, p, z, protos, cfg), support_labels)

    losses: list[Tensor] = []
    if steps > 0:
        lrs = model.inner_lrs_for(params, names, cfg)
        # Recompute steps in the outer backward only when the encoder adapts: that is where the
        # memory is, and then support_loss reads every differentiable tensor from its argument.
        recompute = cfg.recompute_inner_steps and adapts_encoder
        fast, losses = sgd_inner_loop(
            support_loss, fast, names, steps=steps, lrs=lrs, first_order=first_order, recompute=recompute
        )
    protos = None
    if head == "proto":
        feats = encoder_features(model, fast, support) if adapts_encoder else feats0
        protos = prototypes(project(model, fast, feats), support_labels, n_way)
    return AdaptedState(fast, protos, losses)


def meta_step_loss(
    model: MetaModel, params: Mapping[str, Tensor], episode: Episode | EpisodeTensors, cfg: MetaConfig | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Outer (query) loss of one episode after adaptation on its support set.

    ``loss.backward()`` (or ``torch.autograd.grad(loss, params.values())``) gives the
    meta-gradient wrt ``params``: second order for maml (and protomaml with first_order=False),
    first order for fomaml, the plain ProtoNet gradient for protonet.

    Returns:
        The loss and detached 0-d metric tensors (``loss``, ``acc``, ``support_loss_first``,
        ``support_loss_last``); calling ``.item()`` on them is a device sync, so do it when logging.
    """
    cfg = cfg or model.cfg
    if cfg.second_order:
        model.encoder.ensure_double_backward()
    ep = episode if isinstance(episode, EpisodeTensors) else tokenize_episode(model.encoder, episode)
    state = adapt_episode(model, params, ep.support, ep.support_labels, ep.n_way, cfg)
    logits = episode_logits(model, state, ep.query, cfg)
    loss = F.cross_entropy(logits, ep.query_labels)
    metrics = {"loss": loss.detach(), "acc": (logits.detach().argmax(-1) == ep.query_labels).float().mean()}
    if state.support_losses:
        metrics["support_loss_first"] = state.support_losses[0]
        metrics["support_loss_last"] = state.support_losses[-1]
    return loss, metrics


def _mean_metrics(all_metrics: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([m[k] for m in all_metrics]).mean() for k in all_metrics[0]}


def meta_batch_loss(
    model: MetaModel,
    params: Mapping[str, Tensor],
    episodes: Sequence[Episode | EpisodeTensors],
    cfg: MetaConfig | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean ``meta_step_loss`` over a meta-batch (a Python loop: vmap breaks on HF masking code).

    Keeps every episode's graph until backward; ``accumulate_meta_gradients`` uses memory for one.
    """
    if not episodes:
        raise ValueError("empty meta-batch")
    results = [meta_step_loss(model, params, ep, cfg) for ep in episodes]
    loss = torch.stack([r[0] for r in results]).mean()
    return loss, _mean_metrics([r[1] for r in results])


def accumulate_meta_gradients(
    model: MetaModel, episodes: Sequence[Episode | EpisodeTensors], cfg: MetaConfig | None = None
) -> dict[str, Tensor]:
    """Backward each episode's loss / len(episodes) into ``.grad`` of ``model.meta_params()``.

    Same gradient as ``meta_batch_loss(...)[0].backward()``, with one episode's graph alive at a
    time. Under DDP-free data parallelism, reduce the ``.grad`` tensors afterwards.
    """
    if not episodes:
        raise ValueError("empty meta-batch")
    params = model.meta_params()
    all_metrics = []
    for ep in episodes:
        loss, metrics = meta_step_loss(model, params, ep, cfg)
        (loss / len(episodes)).backward()
        all_metrics.append(metrics)
    return _mean_metrics(all_metrics)
