"""Meta-learning over LoRA adapters: algorithms, functional inner loop, learners, checkpoints."""

from __future__ import annotations

from xmeta.meta.cache import PER_EPISODE, RUN_ALL_LAYERS, ActivationCache, FrozenLayers, activation_cache_for
from xmeta.meta.cache_store import ActivationCacheError, prebuild_activation_cache
from xmeta.meta.checkpoint import load_meta_model, save_meta_model
from xmeta.meta.config import MetaConfig
from xmeta.meta.finetune import FinetuneConfig, FinetuneLearner
from xmeta.meta.functional import encoder_features, project, sgd_inner_loop
from xmeta.meta.learners import EpisodePredictor, FrozenProtoLearner, MetaLearner
from xmeta.meta.maml import (
    AdaptedState,
    EpisodeTensors,
    adapt_episode,
    episode_logits,
    meta_step_loss,
    tokenize_episode,
)
from xmeta.meta.memo import FeatureMemo
from xmeta.meta.model import MetaModel, encoder_config_for
from xmeta.meta.precision import Precision, inference_precision
from xmeta.meta.registry import ALGORITHMS, AlgorithmSpec
from xmeta.models.heads import EPISODE_HEAD, EPISODE_HEADS, EpisodeHead

__all__ = [
    "ALGORITHMS",
    "EPISODE_HEAD",
    "EPISODE_HEADS",
    "PER_EPISODE",
    "RUN_ALL_LAYERS",
    "ActivationCache",
    "ActivationCacheError",
    "AdaptedState",
    "AlgorithmSpec",
    "EpisodeHead",
    "EpisodePredictor",
    "EpisodeTensors",
    "FeatureMemo",
    "FinetuneConfig",
    "FinetuneLearner",
    "FrozenLayers",
    "FrozenProtoLearner",
    "MetaConfig",
    "MetaLearner",
    "MetaModel",
    "Precision",
    "activation_cache_for",
    "adapt_episode",
    "encoder_config_for",
    "encoder_features",
    "episode_logits",
    "inference_precision",
    "load_meta_model",
    "meta_step_loss",
    "prebuild_activation_cache",
    "project",
    "save_meta_model",
    "sgd_inner_loop",
    "tokenize_episode",
]
