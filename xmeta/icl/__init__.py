"""In-context-learning baseline: prompts as data, log-likelihood label scoring with a prefix KV cache.

Public API::

    ICLLearner(model="gemma-3-270m", template="topic", ...).adapt(support, seed=0) -> ICLPredictor
    ICLPredictor.predict(texts) -> Prediction
    get_template(name_or_path) / register_template(template) / TEMPLATES
    load_external_predictions(path) -> ExternalPredictions; ExternalLearner(path).adapt(support)
"""

from __future__ import annotations

from xmeta.icl.external import (
    ExternalLearner,
    ExternalPrediction,
    ExternalPredictions,
    ExternalPredictor,
    load_external_predictions,
    predict_uids,
    score_external,
)
from xmeta.icl.learner import ICLConfig, ICLLearner, ICLPredictor
from xmeta.icl.lm import load_causal_lm
from xmeta.icl.prompts import TEMPLATES, PromptTemplate, get_template, load_template, register_template
from xmeta.icl.scoring import LabelScores, LogLikelihoodScorer, PromptState, fork_cache

__all__ = [
    "TEMPLATES",
    "ExternalLearner",
    "ExternalPrediction",
    "ExternalPredictions",
    "ExternalPredictor",
    "ICLConfig",
    "ICLLearner",
    "ICLPredictor",
    "LabelScores",
    "LogLikelihoodScorer",
    "PromptState",
    "PromptTemplate",
    "fork_cache",
    "get_template",
    "load_causal_lm",
    "load_external_predictions",
    "load_template",
    "predict_uids",
    "register_template",
    "score_external",
]
