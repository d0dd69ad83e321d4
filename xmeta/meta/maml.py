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

The recipe owns the optimizer and loop: it calls ``meta_step_loss`` per episode, backpropagates
``loss / meta_batch_size`` (one episode's graph alive at a time) and steps an optimizer over
``model.meta_params()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from xmeta.interfaces import Episode
from xmeta.meta.cache import RUN_ALL_LAYERS, FrozenLayers
from xmeta.meta.config import MetaConfig
from xmeta.meta.functional import Params, encoder_features, logit_scale, project, sgd_inner_loop
from xmeta.meta.model import MetaModel
from xmeta.models.encoder import Encoder
from xmeta.models.heads import EpisodeHead
from xmeta.models.inputs import Batch, EncoderInputs


@dataclass
class EpisodeTensors:
    """A tokenised episode: support/query encoder inputs and episode-local labels."""

    support: EncoderInputs
    support_labels: Tensor
    query: EncoderInputs
    query_labels: Tensor
    n_way: int

    def to(self, device: torch.device | str) -> EpisodeTensors:
        return EpisodeTensors(
            self.support.to(device),
            self.support_labels.to(device),
            self.query.to(device),
            self.query_labels.to(device),
            self.n_way,
        )


def tokenize_episode(
    encoder: Encoder,
    episode: Episode,
    device: torch.device | None = None,
    *,
    cache_frozen: FrozenLayers | bool = RUN_ALL_LAYERS,
) -> EpisodeTensors:
    """Tokenise an ``Episode`` once (re-use it across inner steps and the outer loss).

    Args:
        encoder: the encoder whose tokenizer (and frozen layers) prepare the batches.
        episode: the episode.
        device: where the tensors go; default the encoder's device.
        cache_frozen: a ``FrozenLayers`` option (``xmeta.meta.cache``): token tensors (``False``,
            ``RUN_ALL_LAYERS``), the frozen layers' output computed for this episode (``True``,
            ``PER_EPISODE``) or taken from a run-long ``ActivationCache``.
    """
    device = device or encoder.device

    def labels(examples: Sequence) -> Tensor:
        return torch.tensor([e.label for e in examples], dtype=torch.long, device=device)

    support, query = FrozenLayers.of(cache_frozen).inputs(encoder, (episode.support, episode.query), device)
    return EpisodeTensors(support, labels(episode.support), query, labels(episode.query), episode.n_way)


@dataclass
class AdaptedState:
    """Result of adapting to one support set.

    Attributes:
        params: meta-params with the adapted tensors replaced.
        head: the episode head (its class and its tensors: prototypes, or a linear head).
        support_losses: detached support loss before each inner step.
        intermediate: with ``keep_steps``, the states after inner steps ``1..S-1`` (the last is
            this state), for MAML++'s multi-step loss.
    """

    params: Params
    head: EpisodeHead
    support_losses: list[Tensor] = field(default_factory=list)
    intermediate: list[AdaptedState] = field(default_factory=list)

    def detach(self) -> AdaptedState:
        params = {k: v.detach() for k, v in self.params.items()}
        return AdaptedState(params, self.head.map(Tensor.detach), list(self.support_losses))


def episode_logits(model: MetaModel, state: AdaptedState, batch: Batch) -> Tensor:
    """Logits ``(n, N)`` of a batch under an adapted state."""
    z = project(model, state.params, encoder_features(model, state.params, batch))
    return state.head.logits(z, logit_scale(model, state.params))


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
    keep_steps: bool = False,
) -> AdaptedState:
    """Run the algorithm's adaptation on a tokenised support set (differentiably).

    Args:
        model: the meta-model (its module tensors are read, never modified).
        params: meta-parameters by name, e.g. ``model.meta_params()`` (meta-training) or
            ``model.detached_params()`` (evaluation).
        support: the support set's encoder inputs (or features); ``support_labels`` in ``0..n_way-1``.
        n_way: number of classes.
        cfg: algorithm settings; default ``model.cfg``.
        steps: inner steps; default ``cfg.inner_steps`` (0 for protonet).
        first_order: default ``cfg.effective_first_order``.
        keep_steps: also return the state after every inner step (``AdaptedState.intermediate``);
            a second-order loop then keeps every step's graph (no recomputation).
    """
    cfg = cfg or model.cfg
    head = cfg.episode_head
    steps = (cfg.inner_steps if steps is None else steps) if cfg.spec.inner_loop else 0
    first_order = cfg.effective_first_order if first_order is None else first_order
    names = model.inner_param_names(cfg) if steps > 0 else []
    adapts_encoder = any(n.startswith("encoder.") for n in names)

    feats0: Tensor | None = None
    if head.adapted or not adapts_encoder:
        # Pre-adaptation support embeddings: the init of an adapted head (ProtoMAML's), and the
        # features every inner step reuses when only head tensors adapt (ANIL-style: one encoder
        # pass per episode).
        feats0 = encoder_features(model, params, support)

    def support_embeddings(p: Params) -> Tensor:
        return project(model, p, encoder_features(model, p, support) if adapts_encoder else feats0)

    def fit(z: Tensor, p: Params) -> EpisodeHead:
        return head.from_support(z, support_labels, n_way, distance=cfg.distance, scale=logit_scale(model, p))

    fast: Params = dict(params)
    if head.adapted:  # set once, then adapted by the inner loop like any tensor in the params dict
        fast.update(fit(project(model, params, feats0), params).tensors)

    def support_loss(p: Params) -> Tensor:
        z = support_embeddings(p)
        episode_head = head(p, cfg.distance) if head.adapted else fit(z, p)
        return F.cross_entropy(episode_head.logits(z, logit_scale(model, p)), support_labels)

    def state_of(p: Params) -> AdaptedState:
        p = dict(p)
        if head.adapted:
            return AdaptedState(p, head({n: p.pop(n) for n in head.tensor_names}, cfg.distance))
        return AdaptedState(p, fit(support_embeddings(p), p))  # prototypes refitted with the adapted tensors

    losses: list[Tensor] = []
    kept: list[AdaptedState] = []
    if steps > 0:
        lrs = model.inner_lrs_for(params, names, cfg)
        # Recompute steps in the outer backward only when the encoder adapts: that is where the
        # memory is, and then support_loss reads every differentiable tensor from its argument.
        recompute = cfg.recompute_inner_steps and adapts_encoder and not keep_steps

        def keep(t: int, p: Params) -> None:
            if t < steps - 1:
                kept.append(state_of(p))

        fast, losses = sgd_inner_loop(
            support_loss,
            fast,
            names,
            steps=steps,
            lrs=lrs,
            first_order=first_order,
            recompute=recompute,
            per_step_lrs=cfg.learn_inner_lr and cfg.inner_lr_shape == "tensor_step",
            after_step=keep if keep_steps else None,
        )
    final = state_of(fast)
    return AdaptedState(final.params, final.head, losses, kept)


def meta_step_loss(
    model: MetaModel,
    params: Mapping[str, Tensor],
    episode: Episode | EpisodeTensors,
    cfg: MetaConfig | None = None,
    *,
    step: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Outer (query) loss of one episode after adaptation on its support set.

    ``loss.backward()`` (or ``torch.autograd.grad(loss, params.values())``) gives the
    meta-gradient wrt ``params``: second order for maml (and protomaml with first_order=False),
    first order for fomaml, the plain ProtoNet gradient for protonet.

    ``step`` (the outer step, from 0) drives MAML++'s schedules: first order before
    ``cfg.first_order_until``, and the multi-step loss (the query losses after every inner step,
    weighted by ``cfg.multi_step_loss_weights(step)``) while it lasts.

    Returns:
        The loss and detached 0-d metric tensors (``loss``, ``acc``, ``support_loss_first``,
        ``support_loss_last``); calling ``.item()`` on them is a device sync, so do it when logging.
    """
    cfg = cfg or model.cfg
    model.check_double_backward(cfg)  # a clear error here, not an obscure one from inside autograd
    ep = episode if isinstance(episode, EpisodeTensors) else tokenize_episode(model.encoder, episode)
    weights = cfg.multi_step_loss_weights(step)
    state = adapt_episode(
        model,
        params,
        ep.support,
        ep.support_labels,
        ep.n_way,
        cfg,
        first_order=cfg.first_order_at(step),
        keep_steps=weights is not None,
    )
    logits = episode_logits(model, state, ep.query)
    loss = F.cross_entropy(logits, ep.query_labels)
    if weights is not None:  # "acc" stays the last step's; "loss" is the weighted sum the gradient sees
        loss = weights[-1] * loss + sum(
            w * F.cross_entropy(episode_logits(model, s, ep.query), ep.query_labels)
            for w, s in zip(weights, state.intermediate)
        )
    metrics = {"loss": loss.detach(), "acc": (logits.detach().argmax(-1) == ep.query_labels).float().mean()}
    if state.support_losses:
        metrics["support_loss_first"] = state.support_losses[0]
        metrics["support_loss_last"] = state.support_losses[-1]
    return loss, metrics
