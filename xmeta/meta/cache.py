"""A run-long cache of the frozen layers' output, per example: episodes then run the top layers only.

``FrozenLayers`` is the ``tokenize_episode(cache_frozen=...)`` option: ``RUN_ALL_LAYERS`` (token
tensors), ``PER_EPISODE`` (the frozen layers' output computed for each episode) or a run-long
``ActivationCache``.

With LoRA adapters in the top L layers only, the hidden states entering the lowest adapted layer
do not depend on any meta-parameter: for a given example they are the same in every episode of
a run. ``ActivationCache`` computes them once per example (keyed by ``Example.uid``), stores the
real tokens only (no padding) in a compact buffer, and hands out packed batches that
``Encoder.forward`` runs through the adapted layers without spending compute on padding::

    cache = ActivationCache(encoder)                       # bf16 storage; dtype=torch.float32 for exactness
    batch = tokenize_episode(encoder, episode, cache_frozen=cache)
    loss, metrics = meta_step_loss(model, params, batch)

Determinism: by default each example is computed on its own (nothing is padded, no attention
mask), so its cached value does not depend on which other examples were missing at the same
time: a resumed run refills the cache with bitwise the same values and reproduces the run.
That costs ~25% more fill time on multilingual-e5-small than ``batched_fill=True`` (examples of
equal token length computed together), whose values can differ in the last bits with the
grouping (matrix-multiply kernels are not guaranteed row-independent).

Numerics: the frozen layers always run without dropout (the backbone in eval mode), under the
caller's autocast. bf16 storage rounds the cached hidden states to 8 significant bits (relative
error <= 2^-9); the losses then differ from the uncached path by ~1e-3 relative on
multilingual-e5-small (see tests/test_perf_cache.py for the bound that is checked). fp32 storage
matches the uncached path to float round-off.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from xmeta.interfaces import Example
from xmeta.meta.modes import eval_mode
from xmeta.models.encoder import Encoder
from xmeta.models.inputs import EncoderInputs, HiddenStates, PackedStates

logger = logging.getLogger(__name__)

# numpy has no bfloat16: memory-mapped bf16 rows are stored as int16 bit patterns and viewed back.
_NUMPY_STORAGE = {torch.bfloat16: np.int16, torch.float16: np.float16, torch.float32: np.float32,
                  torch.float64: np.float64}  # fmt: skip


class FrozenLayers:
    """How an episode's examples become encoder inputs: the ``cache_frozen`` option of ``tokenize_episode``.

    This base runs every layer in every forward (token tensors). ``PER_EPISODE`` computes the
    hidden states entering the lowest adapted layer once per episode; ``ActivationCache`` once
    per example for a whole run. Results are the same in every case (up to float round-off, or
    the cache's storage precision); with adapters in the top L layers only, each forward of the
    inner loop then runs L layers instead of all.
    """

    def inputs(
        self, encoder: Encoder, groups: Sequence[Sequence[Example]], device: torch.device
    ) -> list[EncoderInputs]:
        """Encoder inputs for each group of examples (an episode's support and query), on ``device``."""
        return [encoder.tokenize([e.text for e in g], device) for g in groups]

    @staticmethod
    def of(option: FrozenLayers | bool) -> FrozenLayers:
        """``True`` / ``False`` are short for ``PER_EPISODE`` / ``RUN_ALL_LAYERS``."""
        if isinstance(option, FrozenLayers):
            return option
        return PER_EPISODE if option else RUN_ALL_LAYERS


class _PerEpisode(FrozenLayers):
    """The frozen layers' output computed per batch of examples (``Encoder.cache_frozen_layers``),
    packed without padding on BERT-style encoders."""

    def inputs(
        self, encoder: Encoder, groups: Sequence[Sequence[Example]], device: torch.device
    ) -> list[EncoderInputs]:
        return [encoder.cache_frozen_layers(tokens, packed=True) for tokens in super().inputs(encoder, groups, device)]


RUN_ALL_LAYERS = FrozenLayers()
PER_EPISODE = _PerEpisode()


class ActivationCache(FrozenLayers):
    """Hidden states entering ``encoder.first_trainable_layer``, computed once per example uid.

    Args:
        encoder: a BERT-style encoder (``encoder.supports_packing``); only its frozen layers below
            the lowest adapter are run. The adapter layout must not change while the cache is used.
        dtype: storage dtype (bf16 halves memory; float32 for results equal to the uncached path).
        directory: where the memory-mapped store goes once it outgrows ``memory_limit_mb``;
            None: a temporary directory, removed by ``close``.
        memory_limit_mb: in-memory size beyond which the store moves to a memory-mapped file.
        batched_fill: compute examples of equal token length together (faster fills, but the
            values then depend in the last bits on the grouping; see the module docstring).
        fill_batch_tokens: at most this many tokens per forward pass with ``batched_fill``.

    Raises:
        NotImplementedError: for an encoder whose layers cannot run packed.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        dtype: torch.dtype = torch.bfloat16,
        directory: str | Path | None = None,
        memory_limit_mb: float = 2048.0,
        batched_fill: bool = False,
        fill_batch_tokens: int = 8192,
    ) -> None:
        if not encoder.supports_packing:
            raise NotImplementedError(f"ActivationCache needs a BERT-style encoder, got {type(encoder.backbone)}")
        if dtype not in _NUMPY_STORAGE:
            raise ValueError(f"unsupported storage dtype {dtype}")
        self.encoder = encoder
        self.layer = encoder.first_trainable_layer
        self.dtype = dtype
        self.memory_limit_bytes = int(memory_limit_mb * 2**20)
        self.fill_batch_tokens = max(1, int(fill_batch_tokens)) if batched_fill else 0
        self._directory = Path(directory) if directory is not None else None
        self._tmpdir: Path | None = None
        self._memmap: np.memmap | None = None
        self._store = torch.empty(0, encoder.hidden_size, dtype=dtype)
        self._used = 0
        self._index: dict[str, tuple[int, int, int]] = {}  # uid -> (first row, n tokens, crc32 of text)
        self.hits = 0  # looked-up examples found in the cache
        self.misses = 0  # examples computed
        self.fill_seconds = 0.0

    # ---- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, uid: str) -> bool:
        return uid in self._index

    @property
    def n_tokens(self) -> int:
        return self._used

    @property
    def nbytes(self) -> int:
        """Bytes of hidden states held (real tokens only)."""
        return self._used * self._store.shape[1] * self._store.element_size()

    @property
    def memory_mapped(self) -> bool:
        return self._memmap is not None

    def stats(self) -> dict[str, float | int | bool]:
        return {"examples": len(self), "tokens": self._used, "bytes": self.nbytes, "hits": self.hits,
                "misses": self.misses, "fill_seconds": round(self.fill_seconds, 3),
                "memory_mapped": self.memory_mapped, "layer": self.layer}  # fmt: skip

    # ---- filling and reading ------------------------------------------------------------------

    def fill(self, examples: Sequence[Example]) -> int:
        """Compute and store the examples not cached yet; returns how many were computed.

        Raises:
            ValueError: if a cached uid comes back with another text (uids must identify texts).
        """
        self._check_layout()
        todo: dict[str, tuple[str, int]] = {}
        for ex in examples:
            crc = _crc(ex.text)
            hit = self._index.get(ex.uid)
            if hit is not None:
                if hit[2] != crc:
                    raise ValueError(f"uid {ex.uid!r} is cached with another text; uids must be unique per text")
                self.hits += 1
                continue
            if todo.setdefault(ex.uid, (ex.text, crc))[1] != crc:
                raise ValueError(f"uid {ex.uid!r} appears with two different texts")
        if not todo:
            return 0
        start = time.perf_counter()
        uids = list(todo)
        ids = self.encoder.token_ids([todo[u][0] for u in uids])
        by_len: dict[int, list[int]] = {}
        for i, seq in enumerate(ids):
            by_len.setdefault(len(seq), []).append(i)
        enc = self.encoder
        # Frozen layers without dropout (the same value in every episode); the modes found are restored.
        with eval_mode(enc), torch.no_grad():
            for length, members in sorted(by_len.items()):
                per_batch = max(1, self.fill_batch_tokens // length)  # 1 unless batched_fill
                for j in range(0, len(members), per_batch):
                    chunk = members[j : j + per_batch]
                    input_ids = torch.tensor([ids[i] for i in chunk], dtype=torch.long, device=enc.device)
                    mask = torch.ones_like(input_ids)  # equal lengths: no padding, no mask effects
                    h = enc.hidden_states_at(input_ids, mask, layer=self.layer)
                    rows = self._reserve(len(chunk) * length)
                    self._store[rows : rows + len(chunk) * length] = h.reshape(-1, h.shape[-1]).to("cpu", self.dtype)
                    for n, i in enumerate(chunk):
                        self._index[uids[i]] = (rows + n * length, length, todo[uids[i]][1])
        self.misses += len(uids)
        self.fill_seconds += time.perf_counter() - start
        return len(uids)

    def inputs(
        self, encoder: Encoder, groups: Sequence[Sequence[Example]], device: torch.device
    ) -> list[EncoderInputs]:
        """Packed inputs of each group; the examples of all groups are computed together if missing."""
        self.fill([e for g in groups for e in g])  # computes only the examples not seen before
        return [self.batch(g, device, fill=False) for g in groups]

    def batch(
        self,
        examples: Sequence[Example],
        device: torch.device | str | None = None,
        *,
        packed: bool = True,
        fill: bool = True,
    ) -> PackedStates | HiddenStates:
        """Encoder inputs for ``examples``, in their order (computing missing ones first if ``fill``).

        Returns:
            ``PackedStates`` (``(tokens, hidden)`` and per-example ``lengths``), or padded
            ``HiddenStates`` ``(batch, seq, hidden)`` with an ``attention_mask``.

        Raises:
            KeyError: without ``fill``, for an example that is not cached.
        """
        if fill:
            self.fill(examples)
        try:
            entries = [self._index[ex.uid] for ex in examples]
        except KeyError as err:
            raise KeyError(f"{err.args[0]!r} is not in the activation cache; call fill() first") from None
        device = torch.device(device) if device is not None else self.encoder.device
        dtype = self.encoder.dtype
        lengths = torch.tensor([n for _, n, _ in entries], dtype=torch.long)
        rows = torch.cat([torch.arange(first, first + n) for first, n, _ in entries])
        h = self._store.index_select(0, rows).to(device=device, dtype=dtype)
        if packed:
            return PackedStates(h, lengths.to(device), self.layer)
        padded = torch.nn.utils.rnn.pad_sequence(list(h.split(lengths.tolist())), batch_first=True)
        mask = (torch.arange(padded.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).long().to(device)
        return HiddenStates(padded, mask, self.layer)

    def close(self) -> None:
        """Drop the store (and the temporary memory-mapped file, if one was made)."""
        self._store = torch.empty(0, self._store.shape[1], dtype=self.dtype)
        self._memmap = None
        self._index.clear()
        self._used = 0
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __del__(self) -> None:  # pragma: no cover - best effort for temporary files
        if getattr(self, "_tmpdir", None) is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    # ---- storage ------------------------------------------------------------------------------

    def _check_layout(self) -> None:
        if self.encoder.first_trainable_layer != self.layer:
            raise RuntimeError(
                f"the adapter layout changed (lowest adapted layer {self.encoder.first_trainable_layer}, "
                f"cache built for {self.layer}); build a new ActivationCache"
            )

    def _reserve(self, n_rows: int) -> int:
        """Room for ``n_rows`` more rows; returns the first one. Grows by doubling."""
        need = self._used + n_rows
        if need > self._store.shape[0]:
            self._grow(max(need, 2 * self._store.shape[0], 4096))
        first = self._used
        self._used = need
        return first

    def _grow(self, capacity: int) -> None:
        width, item = self._store.shape[1], self._store.element_size()
        if self._memmap is None and capacity * width * item <= self.memory_limit_bytes:
            new = torch.empty(capacity, width, dtype=self.dtype)
            new[: self._used] = self._store[: self._used]
            self._store = new
            return
        path = self._memmap_path()
        old = self._store[: self._used].clone() if self._memmap is None else None
        self._store, self._memmap = torch.empty(0, width, dtype=self.dtype), None  # release the old mapping
        with open(path, "ab") as f:  # grow the file in place; existing rows stay where they are
            f.truncate(capacity * width * item)
        self._memmap = np.memmap(path, dtype=_NUMPY_STORAGE[self.dtype], mode="r+", shape=(capacity, width))
        self._store = torch.from_numpy(self._memmap).view(self.dtype)
        if old is not None:
            logger.info("activation cache: %.0f MB exceeds the memory limit; memory-mapping %s",
                        capacity * width * item / 2**20, path)  # fmt: skip
            self._store[: self._used] = old

    def _memmap_path(self) -> Path:
        if self._directory is None:
            if self._tmpdir is None:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="xmeta-actcache-"))
            directory = self._tmpdir
        else:
            directory = self._directory
            directory.mkdir(parents=True, exist_ok=True)
        dtype = str(self.dtype).replace("torch.", "")
        return directory / f"activations-layer{self.layer}-{dtype}-{os.getpid()}-{id(self):x}.bin"


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def activation_cache_for(encoder: Encoder, enabled: bool = True, **kwargs: object) -> FrozenLayers:
    """What ``tokenize_episode(cache_frozen=...)`` should get for a run.

    A run-long ``ActivationCache`` when ``enabled`` and the encoder can run packed layers (BERT,
    XLM-R, e5); otherwise ``PER_EPISODE`` (enabled) or ``RUN_ALL_LAYERS``. ``kwargs`` go to
    ``ActivationCache``.
    """
    if enabled and encoder.supports_packing:
        return ActivationCache(encoder, **kwargs)  # type: ignore[arg-type]
    return FrozenLayers.of(enabled)
