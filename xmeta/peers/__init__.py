"""The methods users would pick instead of a meta-learned encoder, behind the shared ``Learner`` protocol.

- ``LogRegLearner``: logistic regression on frozen, mean-pooled embeddings (the probe of MTEB's
  classification tasks); ``mteb_protocol`` reproduces MTEB's SIB200Classification evaluation.
- ``SetFitLearner``: the real ``setfit`` library (contrastive fine-tuning of a sentence-transformers
  body on the support set, then its logistic-regression head).

In-context learning through any OpenAI-compatible server lives with the other ICL code
(``xmeta.icl.remote``). Both peers here need the ``peers`` extra (``pip install 'xmeta[peers]'``).
"""

from __future__ import annotations

from xmeta.peers.embeddings import FrozenEmbedder
from xmeta.peers.logreg import LogRegConfig, LogRegLearner, LogRegPredictor

__all__ = ["FrozenEmbedder", "LogRegConfig", "LogRegLearner", "LogRegPredictor"]
