"""Meta-learning over LoRA adapters: algorithms, functional inner loop, learners, checkpoints."""

from __future__ import annotations

from xmeta.meta.cache import ActivationCache, activation_cache_for
from xmeta.meta.checkpoint import load_meta_model, save_meta_model
from xmeta.meta.config import MetaConfig
from xmeta.meta.functional import EPISODE_HEAD, encoder_features, project, sgd_inner_loop
from xmeta.meta.learners import (
    EpisodePredictor,
    FinetuneConfig,
    FinetuneLearner,
    FrozenProtoLearner,
    MetaLearner,
    Precision,
    inference_precision,
)
from xmeta.meta.maml import (
    AdaptedState,
    EpisodeTensors,
    accumulate_meta_gradients,
    adapt_episode,
    episode_logits,
    meta_batch_loss,
    meta_step_loss,
    tokenize_episode,
)
from xmeta.meta.model import MetaModel
from xmeta.meta.registry import ALGORITHMS, AlgorithmSpec

__all__ = [
    "ALGORITHMS",
    "EPISODE_HEAD",
    "ActivationCache",
    "AdaptedState",
    "AlgorithmSpec",
    "EpisodePredictor",
    "EpisodeTensors",
    "FinetuneConfig",
    "FinetuneLearner",
    "FrozenProtoLearner",
    "MetaConfig",
    "MetaLearner",
    "MetaModel",
    "Precision",
    "accumulate_meta_gradients",
    "activation_cache_for",
    "adapt_episode",
    "encoder_features",
    "episode_logits",
    "inference_precision",
    "load_meta_model",
    "meta_batch_loss",
    "meta_step_loss",
    "project",
    "save_meta_model",
    "sgd_inner_loop",
    "tokenize_episode",
]
