"""Test-time options on top of a meta-trained model, each reported as its own labelled method.

- ``FineTuneLearner``: before predicting, fine-tune the run's LoRA adapters and a
  prototype-initialised linear head on the support set for a few SGD steps: the
  pretrain -> meta-train -> fine-tune pipeline (P>M>F, Hu et al., CVPR 2022). With 0 steps it is
  exactly the run's prototype classifier, so the steps are all the option adds.
- ``SoftKMeansLearner``: transductive prototype refinement (Ren et al., ICLR 2018): the
  unlabelled queries, softly assigned to the prototypes, join the support in the class means.
  It uses the query set, so its numbers are transductive and labelled so; the benchmark's query
  sets are class-balanced, which flatters it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xmeta.errors import XmetaError
from xmeta.interfaces import Example, Prediction
from xmeta.meta.functional import encoder_features, logit_scale, project
from xmeta.meta.learners import EpisodePredictor, MetaLearner
from xmeta.meta.model import MetaModel
from xmeta.meta.modes import eval_mode
from xmeta.meta.precision import Precision, inference_precision
from xmeta.models.heads import PROTOTYPES, PrototypeHead
from xmeta.models.inputs import Batch


class FineTuneLearner(MetaLearner):
    """A meta-trained run whose LoRA adapters and head are fine-tuned on each support set.

    The head is ProtoMAML's linear head initialised from the support prototypes (equal to the
    prototype classifier), then ``steps`` full-batch SGD steps at ``lr`` on the support loss adapt
    it together with every LoRA tensor and the projection (``inner_params="all"``).

    Args:
        model: the meta-model.
        steps: fine-tuning steps on the support set.
        lr: SGD learning rate.
        batch_size, precision: as ``MetaLearner``.
    """

    def __init__(
        self,
        model: MetaModel,
        *,
        steps: int = 10,
        lr: float = 0.01,
        batch_size: int = 64,
        precision: Precision = "fp32",
    ) -> None:
        if steps < 0 or lr <= 0:
            raise ValueError(f"fine-tuning needs steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
        super().__init__(model, batch_size=batch_size, inner_steps=steps, precision=precision)
        self.steps = steps
        # First-order SGD over everything the run meta-learned that an inner loop may adapt, with
        # the run's head geometry (distance, projection, temperature) and a linear head on top.
        self.adapt_cfg = dataclasses.replace(
            model.cfg,
            algorithm="fomaml",
            inner_steps=steps,
            inner_lr=lr,
            inner_params="all",
            head="linear_proto",
            learn_inner_lr=False,
            inner_lr_shape="tensor",
            multi_step_loss_steps=0,
            first_order_until=0,
        )
        self.memo = None  # the encoder's adapters change per episode: nothing to memoise


class SoftKMeansPredictor:
    """Classifies a whole query set at once after refining the prototypes with it (transductive).

    Each refinement step assigns every query softly to the classes (softmax of the current
    logits) and recomputes each prototype as the weighted mean of its support embeddings (weight
    1) and the queries (weight = assignment): Ren et al.'s soft k-means.
    """

    def __init__(self, base: EpisodePredictor, support: Batch, support_labels: Tensor, steps: int) -> None:
        if not isinstance(base.state.head, PrototypeHead):
            raise ValueError(f"transductive refinement needs a prototype head, this run's is {base.state.head.name!r}")
        self.base, self.steps = base, steps
        self.label_names = base.label_names
        self.support_z = self._embed(support)
        self.support_onehot = F.one_hot(support_labels, len(self.label_names)).to(self.support_z.dtype)

    @torch.no_grad()
    def _embed(self, batch: Batch) -> Tensor:
        model, params = self.base.model, self.base.state.params
        with eval_mode(model), inference_precision(self.base.precision, model.encoder.device):
            return project(model, params, encoder_features(model, params, batch)).float()

    def refined_logits(self, texts: Sequence[str]) -> Tensor:
        """Logits of ``texts`` under prototypes refined with ``texts`` themselves."""
        base = self.base
        z = torch.cat(
            [self._embed(base._batch(texts[i : i + base.batch_size])) for i in range(0, len(texts), base.batch_size)]
        )
        head = base.state.head
        scale = logit_scale(base.model, base.state.params).detach().float()
        protos = head.tensors[PROTOTYPES].float()
        sums, counts = self.support_onehot.T @ self.support_z, self.support_onehot.sum(0)
        for _ in range(self.steps):
            weights = PrototypeHead({PROTOTYPES: protos}, head.distance).logits(z, scale).softmax(-1)  # (n, N)
            protos = (sums + weights.T @ z) / (counts + weights.sum(0)).unsqueeze(1)
        return PrototypeHead({PROTOTYPES: protos}, head.distance).logits(z, scale)

    def predict(self, texts: Sequence[str]) -> Prediction:
        if isinstance(texts, str):
            raise TypeError("predict takes a sequence of texts, not a single string")
        if not len(texts):
            return Prediction(np.zeros(0, dtype=np.int64), np.zeros((0, len(self.label_names))), self.label_names)
        probs = F.softmax(self.refined_logits(texts).double(), dim=-1).cpu().numpy()
        if not np.isfinite(probs).all():
            raise XmetaError("non-finite class scores after transductive refinement: the model's weights are corrupt")
        return Prediction(probs.argmax(axis=1).astype(np.int64), probs, self.label_names)


class SoftKMeansLearner(MetaLearner):
    """A meta-trained run whose predictor refines its prototypes with the query set (transductive).

    Args:
        model: the meta-model (a prototype head: protonet, fomaml, maml runs).
        steps: soft k-means refinement steps (Ren et al. use 1).
        batch_size, precision: as ``MetaLearner``.
    """

    def __init__(
        self, model: MetaModel, *, steps: int = 1, batch_size: int = 64, precision: Precision = "fp32"
    ) -> None:
        if steps < 1:
            raise ValueError(f"soft k-means needs steps >= 1, got {steps}")
        if model.cfg.episode_head is not PrototypeHead:
            raise ValueError(
                f"transductive refinement needs a prototype head, this run's is {model.cfg.effective_head!r}"
            )
        super().__init__(model, batch_size=batch_size, precision=precision)
        self.steps = steps

    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> SoftKMeansPredictor:
        base = super().adapt(support, seed=seed)
        if self.memo is not None:
            batch: Batch = self.memo.batch([e.text for e in support])
        else:
            batch = base._batch([e.text for e in support])
        labels = torch.tensor([e.label for e in support], dtype=torch.long, device=self.model.encoder.device)
        return SoftKMeansPredictor(base, batch, labels, self.steps)


__all__ = ["FineTuneLearner", "SoftKMeansLearner", "SoftKMeansPredictor"]
