"""In-context learning through any OpenAI-compatible server: the same prompts, demonstrations and episodes.

``RemoteICLLearner.adapt(support)`` shows exactly the support set (shuffled with the episode seed,
as the in-process baseline does) with the same :class:`~xmeta.icl.prompts.PromptTemplate`. Two
ways to score:

- ``loglik`` (vLLM, llama-cpp-python, TGI): the exact log-likelihood of each label, as
  lm-evaluation-harness's completions backend computes it: prompt = prefix + query + answer,
  ``echo`` with ``logprobs``, ``max_tokens=1``; the label's tokens are those the server reports at
  or after the answer's first character (``text_offset``), and their log-probabilities are summed
  (or averaged, ``normalize="mean"``). The label with the highest score wins.
- ``choice`` (chat-only APIs, which return no prompt log-probabilities): the model answers the
  prompt in a chat turn; the answer's first line is matched against the labels' verbalizers after
  normalisation (case, surrounding spaces and punctuation). An answer that names no label (or
  several) is a missing prediction: it counts as wrong and shows up as coverage below 100%.

Every request goes through :class:`~xmeta.icl.openai_client.OpenAIClient` (cache, retries, bounded
concurrency); ``usage()`` reports requests, cache hits and tokens for the benchmark's cost table.
"""

from __future__ import annotations

import logging
import math
import threading
import unicodedata
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from xmeta.errors import InputError
from xmeta.icl.external import ExternalPrediction
from xmeta.icl.learner import order_demonstrations
from xmeta.icl.openai_client import OpenAIClient, ServerError, default_cache_dir
from xmeta.icl.prompts import PromptTemplate, get_template
from xmeta.interfaces import Example, label_names_of

logger = logging.getLogger(__name__)

Scoring = Literal["loglik", "choice"]


@dataclass
class RemoteICLConfig:
    """Options of ICL through an OpenAI-compatible server (method spec ``icl:openai:<model>``).

    Attributes:
        model: The model name the server knows (``"model"`` of every request).
        template: Prompt template name or YAML path (the same as the in-process baseline).
        verbalizers: Label name -> scored word, on top of the template's.
        zero_shot: Leave the demonstrations out.
        scoring: ``loglik`` (completions with echoed log-probabilities) or ``choice`` (chat answer parsed).
        normalize: ``sum`` of the label tokens' log-probabilities, or their ``mean``.
        base_url: Server URL up to ``/v1``; default ``$OPENAI_BASE_URL``.
        api_key_env: Environment variable holding the key (configs never hold keys: they are saved with results).
        max_concurrency: Requests in flight at most.
        max_retries: Retries of a failing request.
        timeout_s: Seconds per request.
        backoff_s: First retry delay (doubles per retry).
        cache: Keep every response on disk so no request is sent twice.
        cache_dir: Where (default ``$XMETA_CACHE/llm_responses``).
        max_answer_tokens: Longest answer in ``choice`` mode.
    """

    model: str
    template: str = "topic"
    verbalizers: dict[str, str] = field(default_factory=dict)
    zero_shot: bool = False
    scoring: Scoring = "loglik"
    normalize: Literal["sum", "mean"] = "sum"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 4
    max_retries: int = 6
    timeout_s: float = 300.0
    backoff_s: float = 1.0
    cache: bool = True
    cache_dir: str | None = None
    max_answer_tokens: int = 16

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must name the server's model: icl:openai:<model>")
        if self.scoring not in ("loglik", "choice"):
            raise ValueError(f"scoring must be 'loglik' or 'choice', got {self.scoring!r}")
        if self.normalize not in ("sum", "mean"):
            raise ValueError(f"normalize must be 'sum' or 'mean', got {self.normalize!r}")
        if self.max_concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0 or self.max_answer_tokens < 1:
            raise ValueError("max_concurrency and max_answer_tokens must be >= 1, max_retries >= 0, timeout_s > 0")


def normalize_answer(text: str) -> str:
    """Case-folded, NFKC, inner whitespace collapsed, surrounding spaces/punctuation/quotes stripped."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = " ".join(text.split())
    return text.strip(" \t\n.,;:!?\"'`*()[]{}«»“”‘’")


def parse_choice(answer: str, options: dict[str, int]) -> int | None:
    """The label id whose normalised verbalizer equals the answer's normalised first line, else None."""
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    return options.get(normalize_answer(lines[0])) if lines else None


def label_logprob(response: dict[str, Any], boundary: int, end: int) -> tuple[float, int]:
    """Sum and count of the echoed log-probabilities of the tokens covering ``[boundary, end)`` of the prompt.

    Raises:
        ServerError: No echoed log-probabilities (the server ignores ``echo``, as llama.cpp's own
            ``llama-server`` does), or no token starts at the label's first character.
    """
    try:
        lp = response["choices"][0]["logprobs"]
        offsets, values = lp["text_offset"], lp["token_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise ServerError(
            "the server returned no echoed prompt log-probabilities; loglik scoring needs a completions endpoint "
            "with echo + logprobs (vLLM, llama-cpp-python with --logits_all true, TGI); use scoring: choice otherwise"
        ) from None
    idx = [i for i, off in enumerate(offsets) if boundary <= off < end]
    if not idx or offsets[idx[0]] != boundary:
        raise ServerError(
            f"no echoed token starts at the label (character {boundary}); the server's tokens do not split "
            "the prompt where the answer begins, so its label log-probability is undefined"
        )
    picked = [values[i] for i in idx]
    if any(v is None or not math.isfinite(v) for v in picked):
        raise ServerError(f"the server returned a null or non-finite log-probability inside the label: {picked}")
    return float(sum(picked)), len(picked)


class RemoteICLPredictor:
    """Classifies texts by prompting a served LLM with one episode's support set."""

    def __init__(
        self,
        client: OpenAIClient,
        cfg: RemoteICLConfig,
        template: PromptTemplate,
        label_names: tuple[str, ...],
        demonstrations: Sequence[Example],
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.template = template
        self.label_names = label_names
        self.demonstrations = tuple(demonstrations)
        demos = [] if cfg.zero_shot else [(d.text, d.label_name) for d in self.demonstrations]
        self.prefix = template.render_prefix(label_names, demos)
        self._usage: Counter[str] = Counter()
        self._lock = threading.Lock()

    def usage(self) -> dict[str, int]:
        """Requests sent and served from the cache, and the tokens of all of them, since this predictor was made."""
        with self._lock:
            return {k: int(self._usage[k]) for k in ("requests", "cached", "prompt_tokens", "completion_tokens")}

    def _post(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        response, cached = self.client.post(endpoint, payload)
        usage = response.get("usage") or {}
        with self._lock:
            self._usage["cached" if cached else "requests"] += 1
            self._usage["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
            self._usage["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        return response

    def _loglik(self, text: str, label: str) -> float:
        context = self.prefix + self.template.render_query(text)
        prompt = context + self.template.render_answer(label)
        payload = {
            "model": self.cfg.model,
            "prompt": prompt,
            "max_tokens": 1,  # 0 means "up to the context size" on some servers
            "temperature": 0.0,
            "echo": True,
            "logprobs": 1,
        }
        total, n = label_logprob(self._post("completions", payload), len(context), len(prompt))
        return total / n if self.cfg.normalize == "mean" else total

    def _choice(self, text: str) -> str:
        payload = {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": self.prefix + self.template.render_query(text)}],
            "max_tokens": self.cfg.max_answer_tokens,
            "temperature": 0.0,
        }
        response = self._post("chat/completions", payload)
        try:
            return str(response["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"unexpected chat answer: {str(response)[:200]}") from None

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), n_labels)`` label log-likelihoods (``loglik`` mode)."""
        jobs = [(t, lab) for t in texts for lab in self.label_names]
        with ThreadPoolExecutor(self.cfg.max_concurrency) as pool:
            values = list(pool.map(lambda job: self._loglik(*job), jobs))
        return np.array(values, dtype=np.float64).reshape(len(texts), len(self.label_names))

    def answers(self, texts: Sequence[str]) -> list[str]:
        """The model's raw answers (``choice`` mode)."""
        with ThreadPoolExecutor(self.cfg.max_concurrency) as pool:
            return list(pool.map(self._choice, texts))

    def predict(self, texts: Sequence[str]) -> ExternalPrediction:
        """Labels, probabilities and which queries got no usable answer (``missing``)."""
        if isinstance(texts, str):
            raise TypeError("predict takes a sequence of texts, not a single string")
        n = len(self.label_names)
        if self.cfg.scoring == "loglik":
            scores = self.score(texts)
            z = np.exp(scores - scores.max(axis=1, keepdims=True)) if len(texts) else np.zeros((0, n))
            probs = z / z.sum(axis=1, keepdims=True) if len(texts) else z
            labels = probs.argmax(axis=1).astype(np.int64) if len(texts) else np.zeros(0, np.int64)
            missing = np.zeros(len(texts), dtype=bool)
        else:
            options = {normalize_answer(self.template.verbalize(name)): i for i, name in enumerate(self.label_names)}
            options.update({normalize_answer(name): i for i, name in enumerate(self.label_names)})
            parsed = [parse_choice(a, options) for a in self.answers(texts)]
            missing = np.array([p is None for p in parsed], dtype=bool)
            labels = np.array([-1 if p is None else p for p in parsed], dtype=np.int64)
            probs = np.full((len(texts), n), 1.0 / n)
            for row, p in enumerate(parsed):
                if p is not None:
                    probs[row] = np.eye(n)[p]
            if missing.any():
                logger.info("%d of %d answers named no label", int(missing.sum()), len(texts))
        return ExternalPrediction(labels, probs, self.label_names, missing=missing, invalid=np.zeros(len(texts), bool))


class RemoteICLLearner:
    """In-context learning with a served LLM: ``adapt(support)`` builds the prompt, no training.

    Args:
        cfg: Model, template, scoring and connection options.
        client: A ready client (default: one built from ``cfg``, its key from ``cfg.api_key_env``).
    """

    def __init__(self, cfg: RemoteICLConfig, client: OpenAIClient | None = None) -> None:
        import os

        self.cfg = cfg
        self.template = get_template(cfg.template).with_verbalizers(cfg.verbalizers)
        self.client = client or OpenAIClient(
            cfg.base_url,
            os.environ.get(cfg.api_key_env),
            cache_dir=(cfg.cache_dir or default_cache_dir()) if cfg.cache else None,
            max_concurrency=cfg.max_concurrency,
            max_retries=cfg.max_retries,
            timeout_s=cfg.timeout_s,
            backoff_s=cfg.backoff_s,
        )

    def adapt(self, support: Sequence[Example], *, seed: int = 0) -> RemoteICLPredictor:
        """The predictor whose prompt shows exactly ``support`` (shuffled with ``seed``)."""
        label_names = label_names_of(support)
        if not label_names:
            raise InputError("empty support set")
        return RemoteICLPredictor(
            self.client, self.cfg, self.template, label_names, order_demonstrations(support, seed)
        )


__all__ = [
    "RemoteICLConfig",
    "RemoteICLLearner",
    "RemoteICLPredictor",
    "label_logprob",
    "normalize_answer",
    "parse_choice",
]
