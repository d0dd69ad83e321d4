"""The in-context-learning baseline behind the shared ``Learner``/``Predictor`` interface.

``ICLLearner.adapt(support)`` puts exactly the support set (shuffled with the seed) into the
prompt as demonstrations; ``ICLPredictor.predict(texts)`` scores every label verbalizer by its
log-likelihood after each query and takes the argmax. The shared prefix is encoded once and its KV
cache reused for every query and label (see ``xmeta.icl.scoring``).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from xmeta.errors import XmetaError
from xmeta.icl.lm import context_length, load_causal_lm, resolve_dtype
from xmeta.icl.prompts import PromptTemplate, get_template
from xmeta.icl.scoring import LabelScores, LogLikelihoodScorer, Normalize, PromptState
from xmeta.interfaces import Example, Prediction, label_names_of

logger = logging.getLogger(__name__)


@dataclass
class ICLConfig:
    """Options of the ICL baseline (the single source of truth; YAML/CLI override these).

    Attributes:
        model: Zoo name, hub id or local directory of a causal LM.
        template: Registered template name or path to a template YAML file.
        verbalizers: Label name -> scored word, on top of the template's own mapping.
        zero_shot: Leave the demonstrations out (the instruction still names the labels).
        normalize: ``"sum"`` of label-token log-probs, or ``"mean"`` per token.
        calibrate: Contextual calibration: divide out the label distribution that the prompt gives
            a content-free query (Zhao et al., 2021).
        content_free: The content-free queries; their label probabilities are averaged.
        use_cache: Reuse the prefix KV cache (``False`` runs the full prompt per query and label).
        batch_size: Most label rows per forward pass.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        device: Torch device; ``None`` takes accelerate's ``PartialState().device``.
        max_length: Cap on the context length (tokens); ``None`` uses the model's.
    """

    model: str = "gemma-3-270m"
    template: str = "topic"
    verbalizers: dict[str, str] = field(default_factory=dict)
    zero_shot: bool = False
    normalize: Literal["sum", "mean"] = "sum"
    calibrate: bool = False
    content_free: tuple[str, ...] = ("N/A",)
    use_cache: bool = True
    batch_size: int = 16
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.normalize not in ("sum", "mean"):
            raise ValueError(f"normalize must be 'sum' or 'mean', got {self.normalize!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be positive, got {self.max_length}")
        if self.calibrate and not self.content_free:
            raise ValueError("calibrate needs at least one content_free query")
        resolve_dtype(self.dtype)


def order_demonstrations(support: Sequence[Example], seed: int) -> list[Example]:
    """The support set in prompt order: shuffled with ``seed`` (deterministic, input order kept stable)."""
    demos = list(support)
    random.Random(seed).shuffle(demos)
    return demos


def drop_one_demonstration(demos: Sequence[Example]) -> list[Example]:
    """Remove one demonstration of the class that has the most, keeping the classes balanced.

    Among tied classes, the one whose last demonstration sits latest in the prompt loses that
    demonstration, so repeated calls peel demonstrations off the end class by class.
    """
    counts = Counter(d.label for d in demos)
    top = max(counts.values())
    last_pos = {d.label: i for i, d in enumerate(demos)}
    victim = max((lab for lab, c in counts.items() if c == top), key=lambda lab: last_pos[lab])
    drop_at = last_pos[victim]
    return [d for i, d in enumerate(demos) if i != drop_at]


class ICLPredictor:
    """Classifies texts by prompting a causal LM with one episode's support set.

    Attributes:
        label_names: Episode labels in label-id order.
        demonstrations: The support set in prompt order (before any truncation).
        template: The prompt template (verbalizers included).
        n_demonstrations_used: How many demonstrations the last prompt kept.
    """

    def __init__(
        self,
        *,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        template: PromptTemplate,
        label_names: tuple[str, ...],
        demonstrations: Sequence[Example],
        config: ICLConfig,
    ) -> None:
        self.label_names = label_names
        self.demonstrations = tuple(demonstrations)
        self.template = template
        self.config = config
        self.tokenizer = tokenizer
        self.scorer = LogLikelihoodScorer(model, batch_size=config.batch_size)
        limit = context_length(model, tokenizer)
        self.context_length = min(limit, config.max_length) if config.max_length else limit
        self.n_demonstrations_used = len(self.demonstrations)
        self._label_ids = [self._tokens(template.render_answer(n)) for n in label_names]
        # One encoded prefix (and its calibration prior) is kept, keyed by the demonstrations used.
        self._prefix: tuple[tuple[str, ...], list[int], PromptState | None] | None = None
        self._prior: tuple[tuple[str, ...], np.ndarray] | None = None

    @property
    def prefix_tokens(self) -> int:
        """Tokens in the prefix (instruction + demonstrations) last used; 0 before the first call."""
        return len(self._prefix[1]) if self._prefix is not None else 0

    def _tokens(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prefix_ids(self, demos: Sequence[Example]) -> list[int]:
        text = self.template.render_prefix(self.label_names, [(d.text, d.label_name) for d in demos])
        # BOS is added by hand (not via add_special_tokens) so no tokenizer can append an EOS.
        bos = self.tokenizer.bos_token_id
        return ([bos] if bos is not None else []) + self._tokens(text)

    def prompt(self, text: str, label_name: str | None = None) -> str:
        """The full prompt for ``text`` with all demonstrations, optionally with its answer."""
        demos = [] if self.config.zero_shot else self.demonstrations
        out = self.template.render(self.label_names, [(d.text, d.label_name) for d in demos], text)
        return out + (self.template.render_answer(label_name) if label_name is not None else "")

    def _fit_prefix(self, need: int) -> tuple[tuple[str, ...], list[int]]:
        """Demonstrations (as uids) and prefix ids such that prefix + ``need`` tokens fit the context."""
        demos = [] if self.config.zero_shot else list(self.demonstrations)
        ids = self._prefix_ids(demos)
        dropped = 0
        while len(ids) + need > self.context_length and demos:
            demos = drop_one_demonstration(demos)
            dropped += 1
            ids = self._prefix_ids(demos)
        if len(ids) + need > self.context_length:
            raise XmetaError(
                f"prompt does not fit the context of {self.context_length} tokens even zero-shot: "
                f"instruction {len(ids)} + longest query and label {need} tokens"
            )
        if dropped:
            per_class = dict(sorted(Counter(d.label_name for d in demos).items()))
            logger.warning(
                "prompt exceeds the %d-token context: dropped %d of %d demonstrations (kept per class: %s)",
                self.context_length,
                dropped,
                len(self.demonstrations),
                per_class,
            )
        self.n_demonstrations_used = len(demos)
        return tuple(d.uid for d in demos), ids

    def _prepare(self, query_ids: Sequence[Sequence[int]]) -> tuple[tuple[str, ...], list[int], PromptState | None]:
        """The prefix for these queries, encoded once and reused while the demonstrations stay the same."""
        # The content-free queries always count towards the budget when calibrating, so that the
        # scores and the prior they are divided by always come from the same prompt.
        extra = [len(q) for q in self._content_free_ids()] if self.config.calibrate else []
        need = max([len(q) for q in query_ids] + extra, default=0) + max(len(lab) for lab in self._label_ids)
        key, ids = self._fit_prefix(need)
        if self._prefix is None or self._prefix[0] != key:
            state = self.scorer.encode(ids) if self.config.use_cache else None
            self._prefix = (key, ids, state)
            self._prior = None
        return self._prefix

    def _content_free_ids(self) -> list[list[int]]:
        return [self._tokens(self.template.render_query(t)) for t in self.config.content_free]

    def _score_ids(self, query_ids: Sequence[Sequence[int]], ids: list[int], state: PromptState | None) -> LabelScores:
        if state is not None:
            return self.scorer.score_cached(state, query_ids, self._label_ids)
        return self.scorer.score_naive(ids, query_ids, self._label_ids)

    def _run(self, texts: Sequence[str], with_prior: bool) -> tuple[LabelScores, np.ndarray | None]:
        query_ids = [self._tokens(self.template.render_query(t)) for t in texts]
        key, ids, state = self._prepare(query_ids)
        scores = self._score_ids(query_ids, ids, state)
        if not with_prior:
            return scores, None
        if self._prior is None or self._prior[0] != key:
            cf = self._score_ids(self._content_free_ids(), ids, state).scores(self.config.normalize)
            self._prior = (key, _softmax(cf).mean(axis=0))
        return scores, self._prior[1]

    def score(self, texts: Sequence[str]) -> LabelScores:
        """Raw (uncalibrated) summed label log-likelihoods ``(len(texts), n_labels)``."""
        return self._run(texts, with_prior=False)[0]

    def label_prior(self) -> np.ndarray:
        """Label probabilities ``(n_labels,)`` the prompt gives the content-free queries (averaged)."""
        prior = self._run([], with_prior=True)[1]
        assert prior is not None
        return prior

    def predict(self, texts: Sequence[str]) -> Prediction:
        """Label each text with the best-scoring verbalizer.

        Args:
            texts: Query texts.

        Returns:
            Predicted label ids and softmax probabilities over the label scores (calibrated when
            ``config.calibrate``).
        """
        if len(texts) == 0:
            n = len(self.label_names)
            return Prediction(np.zeros(0, dtype=np.int64), np.zeros((0, n)), self.label_names)
        scores, prior = self._run(texts, with_prior=self.config.calibrate)
        logits = scores.scores(self.config.normalize)
        if prior is not None:
            # Contextual calibration: p(y|x) / p(y|content-free), renormalised; in log space.
            logits = np.log(_softmax(logits)) - np.log(prior)[None, :]
        probs = _softmax(logits)
        return Prediction(probs.argmax(axis=1).astype(np.int64), probs, self.label_names)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class ICLLearner:
    """In-context learning with a causal LM: ``adapt(support)`` builds the prompt, no training.

    Args:
        model: Zoo name, hub id, local directory, or an already loaded causal LM.
        tokenizer: Required when ``model`` is a loaded model; otherwise loaded with it.
        template: Template name, YAML path or :class:`PromptTemplate`.
        verbalizers: Label name -> scored word (defaults to the label names).
        zero_shot: No demonstrations.
        normalize: ``"sum"`` or ``"mean"`` (length-normalised) label log-likelihood.
        calibrate: Contextual calibration against ``content_free`` queries.
        content_free: Content-free queries for calibration.
        use_cache: Reuse the prefix KV cache across queries and labels.
        batch_size: Most label rows per forward pass.
        dtype: Model dtype when loading by name.
        device: Model device when loading by name (default: accelerate's).
        max_length: Cap on the context length in tokens.
    """

    def __init__(
        self,
        model: str | PreTrainedModel = "gemma-3-270m",
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        template: str | PromptTemplate = "topic",
        verbalizers: dict[str, str] | None = None,
        zero_shot: bool = False,
        normalize: Normalize = "sum",
        calibrate: bool = False,
        content_free: Sequence[str] = ("N/A",),
        use_cache: bool = True,
        batch_size: int = 16,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        device: str | None = None,
        max_length: int | None = None,
    ) -> None:
        loaded = not isinstance(model, str)
        if loaded and tokenizer is None:
            raise ValueError("pass the tokenizer together with a loaded model")
        self.template = get_template(template).with_verbalizers(verbalizers)
        self.config = ICLConfig(
            model=type(model).__name__ if loaded else model,
            template=self.template.name,
            verbalizers=dict(verbalizers or {}),
            zero_shot=zero_shot,
            normalize=normalize,
            calibrate=calibrate,
            content_free=tuple(content_free),
            use_cache=use_cache,
            batch_size=batch_size,
            dtype=dtype,
            device=device,
            max_length=max_length,
        )
        self._model: PreTrainedModel | None = None if isinstance(model, str) else model
        self._tokenizer = tokenizer

    @classmethod
    def from_config(cls, config: ICLConfig) -> ICLLearner:
        """A learner for ``config`` (the model is loaded on first use)."""
        return cls(
            config.model,
            template=config.template,
            verbalizers=config.verbalizers,
            zero_shot=config.zero_shot,
            normalize=config.normalize,
            calibrate=config.calibrate,
            content_free=config.content_free,
            use_cache=config.use_cache,
            batch_size=config.batch_size,
            dtype=config.dtype,
            device=config.device,
            max_length=config.max_length,
        )

    def load(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The model and tokenizer, loaded once and shared by every predictor of this learner."""
        if self._model is None or self._tokenizer is None:
            self._model, self._tokenizer = load_causal_lm(
                self.config.model, dtype=self.config.dtype, device=self.config.device
            )
        return self._model, self._tokenizer

    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> ICLPredictor:
        """Build the predictor whose prompt shows exactly ``support`` (shuffled with ``seed``).

        Args:
            support: The episode's labelled examples (label ids 0..N-1), normally K per class.
            seed: Shuffles the demonstration order.

        Returns:
            A predictor; its first ``predict`` encodes the shared prefix.
        """
        label_names = label_names_of(support)
        counts = Counter(ex.label for ex in support)
        if len(set(counts.values())) > 1:
            logger.warning("support is not class-balanced (%s); using it as given", dict(sorted(counts.items())))
        model, tokenizer = self.load()
        return ICLPredictor(
            model=model,
            tokenizer=tokenizer,
            template=self.template,
            label_names=label_names,
            demonstrations=order_demonstrations(support, seed),
            config=self.config,
        )


__all__ = ["ICLConfig", "ICLLearner", "ICLPredictor", "drop_one_demonstration", "order_demonstrations"]
