"""Generation-free label scoring: log-likelihood of each label continuation after a prompt.

Token ids are always ``prefix_ids + query_ids + label_ids`` with the three parts tokenized
separately, in the cached and in the naive path alike, so both score exactly the same sequence
and can be compared to float tolerance (tokenizing the joined string could merge tokens across a
boundary and make the comparison meaningless).

Cached path, per episode: the prefix (instruction + demonstrations) runs through the model once;
per query, the query tokens run once on top of a zero-copy view of the prefix cache; then all
labels of that query run as one batch on top of the query's cache. A label's first token is scored
from the query step's last logits, so single-token labels cost no extra forward at all, and when
at most one label has several tokens its remaining tokens ride along in the query's forward
(one forward per query).

Queries are not batched with each other on purpose: right-padding a ragged batch of queries would
leave padding slots between a query and its labels, and sliding-window layers (Gemma 2/3) count
their window in cache slots, so those slots would shift the window and change the scores.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

logger = logging.getLogger(__name__)

Normalize = Literal["sum", "mean"]


@dataclass
class LabelScores:
    """Summed label log-likelihoods for a set of queries.

    Attributes:
        logprob_sum: ``(n_queries, n_labels)`` sum of the label tokens' log-probabilities.
        n_tokens: ``(n_labels,)`` number of tokens in each label continuation.
    """

    logprob_sum: np.ndarray
    n_tokens: np.ndarray

    def scores(self, normalize: Normalize = "sum") -> np.ndarray:
        """Per-label scores: the sum, or the mean per token (length-normalised)."""
        if normalize == "sum":
            return self.logprob_sum
        if normalize == "mean":
            return self.logprob_sum / self.n_tokens[None, :]
        raise ValueError(f"normalize must be 'sum' or 'mean', got {normalize!r}")


@dataclass
class PromptState:
    """A prompt already run through the model (batch 1).

    Attributes:
        cache: Its KV cache; never mutated (forks are views), so it can be reused for every query.
        length: Number of tokens it covers.
        last_logprobs: ``(vocab,)`` float32 next-token log-probabilities after its last token.
    """

    cache: Cache | None
    length: int
    last_logprobs: torch.Tensor | None


def fork_cache(cache: Cache, batch: int) -> Cache:
    """A copy of a batch-1 ``cache`` for ``batch`` rows that leaves ``cache`` untouched.

    For plain dynamic caches (full and sliding-window layers) the copy shares memory: each layer
    gets an expanded view, and the model's ``update`` concatenates into new tensors instead of
    writing into the views. Other cache types are deep-copied and repeated.
    """
    plain = type(cache) is DynamicCache and all(
        type(x) in (DynamicLayer, DynamicSlidingWindowLayer) for x in cache.layers
    )
    if not plain:
        out = copy.deepcopy(cache)
        if batch > 1:
            out.batch_repeat_interleave(batch)
        return out
    out = copy.copy(cache)
    out.layers = []
    for layer in cache.layers:
        view = copy.copy(layer)  # also copies the sliding layers' cumulative_length
        if layer.is_initialized and layer.keys is not None and layer.keys.numel() > 0:
            view.keys = layer.keys.expand(batch, -1, -1, -1)
            view.values = layer.values.expand(batch, -1, -1, -1)
        out.layers.append(view)
    return out


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``rows``; returns ids and a 0/1 mask (padding only ever follows real tokens)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


class LogLikelihoodScorer:
    """Scores label continuations with a causal LM, with or without a shared prefix KV cache.

    Args:
        model: Any Hugging Face causal LM (eval mode is set here).
        batch_size: Most label rows per forward pass (bounds memory: each row materialises its own
            copy of the prompt's keys and values inside the attention layers).
    """

    def __init__(self, model: PreTrainedModel, *, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.batch_size = batch_size
        params = inspect.signature(model.forward).parameters
        # transformers 5.x renamed past_key_values -> cache (the old name is deprecated).
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keeps_logits = "logits_to_keep" in params
        pad = getattr(model.config, "pad_token_id", None)
        self._pad_id = int(pad) if isinstance(pad, int) and pad >= 0 else 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        state: PromptState | None,
        keep: torch.Tensor,
        use_cache: bool,
    ) -> tuple[torch.Tensor, Cache | None]:
        """Run ``ids`` (B, L) after ``state``; returns float32 log-probs at positions ``keep``."""
        batch, width = ids.shape
        past = state.length if state is not None else 0
        full_mask = torch.cat([torch.ones((batch, past), dtype=torch.long), mask], dim=1)
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(self.device),
            "attention_mask": full_mask.to(self.device),
            "position_ids": torch.arange(past, past + width, device=self.device)[None].expand(batch, -1),
            "use_cache": use_cache,
        }
        if state is not None and state.cache is not None:
            kwargs[self._cache_kw] = fork_cache(state.cache, batch)
        if self._keeps_logits:
            # Only project the kept positions onto the (up to 262k-word) vocabulary.
            kwargs["logits_to_keep"] = keep.to(self.device)
        out = self.model(**kwargs)
        logits = out.logits if self._keeps_logits else out.logits[:, keep.to(out.logits.device)]
        cache = getattr(out, self._cache_kw, None) if use_cache else None
        return logits.float().log_softmax(-1), cache

    def encode(self, ids: Sequence[int], state: PromptState | None = None) -> PromptState:
        """Run ``ids`` after ``state`` (or from scratch) and keep the cache for later continuations.

        Args:
            ids: Token ids to append.
            state: What they follow; left unchanged.

        Returns:
            The extended state.
        """
        if len(ids) == 0:
            return state if state is not None else PromptState(None, 0, None)
        tensor, mask = _pad([ids], self._pad_id)
        logprobs, cache = self._forward(tensor, mask, state, torch.tensor([len(ids) - 1]), use_cache=True)
        base = state.length if state is not None else 0
        return PromptState(cache=cache, length=base + len(ids), last_logprobs=logprobs[0, -1])

    def score_labels(self, state: PromptState, label_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Summed log-probabilities ``(n_labels,)`` of each label continuation after ``state``."""
        if state.last_logprobs is None:
            raise ValueError("cannot score a label with no context at all (empty prompt and query)")
        sums = np.array([float(state.last_logprobs[lab[0]]) for lab in label_ids], dtype=np.float64)
        # Feed each label but its last token; position j then predicts label token j + 1.
        longer = [i for i, lab in enumerate(label_ids) if len(lab) > 1]
        for start in range(0, len(longer), self.batch_size):
            rows = longer[start : start + self.batch_size]
            ids, mask = _pad([label_ids[i][:-1] for i in rows], self._pad_id)
            logprobs, _ = self._forward(ids, mask, state, torch.arange(ids.shape[1]), use_cache=True)
            for r, i in enumerate(rows):
                target = torch.tensor(label_ids[i][1:], device=logprobs.device)
                sums[i] += float(logprobs[r, : len(target)].gather(-1, target[:, None]).sum())
        return sums

    def score_cached(
        self,
        prefix: PromptState,
        query_ids: Sequence[Sequence[int]],
        label_ids: Sequence[Sequence[int]],
    ) -> LabelScores:
        """Score every label after every query, reusing the prefix's KV cache.

        Args:
            prefix: The encoded shared prefix (see :meth:`encode`).
            query_ids: Token ids of each query block (tokenized without special tokens).
            label_ids: Token ids of each label continuation; none may be empty.

        Returns:
            The summed label log-likelihoods.
        """
        _check_labels(label_ids)
        out = np.zeros((len(query_ids), len(label_ids)), dtype=np.float64)
        multi = [i for i, lab in enumerate(label_ids) if len(lab) > 1]
        for q, ids in enumerate(query_ids):
            if len(multi) <= 1 and len(ids) > 0:
                out[q] = self._score_one_pass(prefix, ids, label_ids, multi[0] if multi else None)
            else:
                out[q] = self.score_labels(self.encode(ids, prefix), label_ids)
        return LabelScores(out, np.array([len(x) for x in label_ids]))

    def _score_one_pass(
        self, prefix: PromptState, ids: Sequence[int], label_ids: Sequence[Sequence[int]], long: int | None
    ) -> np.ndarray:
        """All labels in one forward when at most one label has several tokens (e.g. SIB-200's
        "science/technology"): run ``query + that label`` and read every label's first token from
        the last query position. Saves the second forward per query of the two-step path."""
        extra = list(label_ids[long][:-1]) if long is not None else []
        tensor, mask = _pad([[*ids, *extra]], self._pad_id)
        keep = torch.arange(len(ids) - 1, len(ids) + len(extra))
        logprobs, _ = self._forward(tensor, mask, prefix, keep, use_cache=True)
        sums = np.array([float(logprobs[0, 0, lab[0]]) for lab in label_ids], dtype=np.float64)
        if long is not None:
            target = torch.tensor(label_ids[long][1:], device=logprobs.device)
            sums[long] += float(logprobs[0, 1:].gather(-1, target[:, None]).sum())
        return sums

    def score_naive(
        self,
        prefix_ids: Sequence[int],
        query_ids: Sequence[Sequence[int]],
        label_ids: Sequence[Sequence[int]],
    ) -> LabelScores:
        """The reference: run the full ``prefix + query + label`` sequence for every pair, no cache."""
        _check_labels(label_ids)
        out = np.zeros((len(query_ids), len(label_ids)), dtype=np.float64)
        for q, ids in enumerate(query_ids):
            context = [*prefix_ids, *ids]
            if not context:
                raise ValueError("cannot score a label with no context at all (empty prompt and query)")
            for start in range(0, len(label_ids), self.batch_size):
                labels = label_ids[start : start + self.batch_size]
                rows = [[*context, *lab[:-1]] for lab in labels]
                tensor, mask = _pad(rows, self._pad_id)
                width = max(len(lab) for lab in labels)
                keep = torch.arange(len(context) - 1, len(context) - 1 + width)
                logprobs, _ = self._forward(tensor, mask, None, keep, use_cache=False)
                for r, lab in enumerate(labels):
                    target = torch.tensor(lab, device=logprobs.device)
                    out[q, start + r] = float(logprobs[r, : len(lab)].gather(-1, target[:, None]).sum())
        return LabelScores(out, np.array([len(x) for x in label_ids]))


def _check_labels(label_ids: Sequence[Sequence[int]]) -> None:
    if not label_ids:
        raise ValueError("no labels to score")
    for i, lab in enumerate(label_ids):
        if len(lab) == 0:
            raise ValueError(f"label {i} tokenizes to no tokens; give it a non-empty verbalizer")
