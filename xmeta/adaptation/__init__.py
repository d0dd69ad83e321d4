"""Adapt a meta-trained encoder to a new language from a few labelled examples, and use the result.

Public API::

    import xmeta
    predictor = xmeta.adapt([("Timu ilishinda mechi", "sports"), ...], model="default", lang="swh_Latn")
    predictor.predict(["..."])            # -> Prediction (labels, probs, label_names)
    predictor.save("my-swahili-model")     # safetensors + JSON + model card (xmeta.adaptation.artifact)
    xmeta.load_predictor("my-swahili-model")

``support`` is a list of ``(text, label)`` pairs, a list of ``Example``, or a TSV/CSV/JSONL file
with a header; how bad rows are handled is documented in ``xmeta.adaptation.support``. ``model`` is
``"default"`` (the adapter shipped in ``xmeta/assets/default``), a meta-training run directory, or
an already loaded ``MetaModel`` (see ``xmeta.adaptation.source``). Adaptation is exactly the benchmark's
``MetaLearner.adapt_state``: the algorithm's inner loop (first order), or prototypes for protonet.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xmeta.adaptation.predictor import AdaptedPredictor, load_predictor
from xmeta.adaptation.source import MetaSource, load_meta
from xmeta.adaptation.support import DEFAULT_MAX_PER_CLASS, SupportInput, SupportSet, load_support
from xmeta.meta.learners import MetaLearner, Precision
from xmeta.meta.model import MetaModel

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_PER_CLASS",
    "AdaptedPredictor",
    "MetaSource",
    "SupportSet",
    "adapt",
    "adapt_support",
    "load_meta",
    "load_predictor",
    "load_support",
]


def _token_stats(model: MetaModel, texts: Sequence[str]) -> dict[str, Any]:
    """Token counts (with the encoder's text prefix) and how many exceed ``max_length``."""
    enc = model.encoder
    ids = enc.tokenizer([enc.cfg.text_prefix + t for t in texts], add_special_tokens=True)["input_ids"]
    lengths = [len(x) for x in ids]
    over = sum(n > enc.cfg.max_length for n in lengths)
    if over:
        logger.warning("%d support text(s) are longer than %d tokens and are truncated", over, enc.cfg.max_length)
    return {"mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths), "truncated": over}


def adapt_support(
    support: SupportSet,
    source: MetaSource,
    *,
    seed: int = 0,
    inner_steps: int | None = None,
    batch_size: int = 64,
    precision: Precision = "fp32",
) -> AdaptedPredictor:
    """Adapt ``source``'s meta-trained model to a validated support set.

    Args:
        support: from ``load_support``.
        source: from ``load_meta`` (or ``MetaSource(model)`` for a model in memory).
        seed: seed of the adaptation (dropout-free, so it only matters for stochastic algorithms).
        inner_steps: inner steps; default the model's ``eval_inner_steps`` (ignored by protonet).
        batch_size: texts per forward pass when predicting.
        precision: "fp32" (exact) or "bf16" autocast for adapting and predicting.
    """
    model = source.model
    learner = MetaLearner(model, batch_size=batch_size, inner_steps=inner_steps, precision=precision)
    state = learner.adapt_state(support.examples, seed=seed)
    cfg = model.cfg
    steps = learner.inner_steps if cfg.spec.inner_loop else 0
    losses = [round(float(x), 6) for x in state.support_losses]
    logger.info("adapted %s to %d labels from %d examples", cfg.algorithm, len(support.label_names),
                len(support.examples))  # fmt: skip
    from xmeta.data.languages import language_info

    stats = {
        **support.stats,
        "source": support.source,
        "tokens": _token_stats(model, [e.text for e in support.examples]),
    }
    metadata = {
        "xmeta_version": _version(),
        "lang": support.lang,
        "lang_name": language_info(support.lang).name,
        "support": stats,
        "source": dict(source.info) or {"model": "in-memory MetaModel"},
        "adaptation": {
            "algorithm": cfg.algorithm,
            "head": cfg.effective_head,
            "distance": cfg.distance,
            "inner_steps": steps,
            "inner_lr": cfg.inner_lr,
            "inner_params": cfg.inner_params,
            "seed": seed,
            "support_losses": losses,
        },
    }
    return AdaptedPredictor(
        model, state, support.label_names, metadata=metadata, batch_size=batch_size, precision=precision
    )


def adapt(
    support: SupportInput,
    model: str | Path | MetaModel | MetaSource = "default",
    *,
    lang: str | None = None,
    labels: Sequence[str] | None = None,
    max_per_class: int | None = DEFAULT_MAX_PER_CLASS,
    seed: int = 0,
    text_column: str = "text",
    label_column: str = "label",
    inner_steps: int | None = None,
    batch_size: int = 64,
    precision: Precision = "fp32",
) -> AdaptedPredictor:
    """Adapt a meta-trained encoder to a few labelled examples and return a predictor.

    Args:
        support: ``(text, label)`` pairs, ``Example`` objects (their ``label_name`` is used), or a
            TSV/CSV/JSONL file with a header.
        model: ``"default"``, a meta-training run directory, or a loaded ``MetaModel``/``MetaSource``.
        lang: FLORES-style code of the support language (recorded in the model card).
        labels: the expected label set and id order; ``None`` takes the sorted labels found.
        max_per_class: most examples kept per class (seeded subsample beyond); ``None``: no cap.
        seed: seed of the subsampling and the adaptation.
        text_column: header name of the text column (files only).
        label_column: header name of the label column (files only).
        inner_steps: adaptation steps; default the meta-trained model's evaluation setting.
        batch_size: texts per forward pass when predicting.
        precision: "fp32" (exact, the default) or "bf16" autocast: about 2x faster on CPUs with bf16
            units and on GPUs (see ``xmeta.meta.inference_precision``).

    Returns:
        An ``AdaptedPredictor`` (``predict``, ``save``).

    Raises:
        InputError: bad support (see ``xmeta.adaptation.support``) or an unusable model directory.
    """
    sup = load_support(support, text_column=text_column, label_column=label_column, lang=lang, labels=labels,
                       max_per_class=max_per_class, seed=seed)  # fmt: skip
    if isinstance(model, MetaSource):
        source = model
    elif isinstance(model, MetaModel):
        source = MetaSource(model, {"model": "in-memory MetaModel", "algorithm": model.cfg.algorithm})
    else:
        source = load_meta(model)
    return adapt_support(sup, source, seed=seed, inner_steps=inner_steps, batch_size=batch_size, precision=precision)


def _version() -> str:
    from xmeta import __version__

    return __version__
