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

Determinism: the cache fills in fixed-shape tiles. Examples are grouped by token length rounded
up to ``FILL_WIDTH_STEP`` (the tile width W), right-padded to W with masked keys, and run
``fill_batch_tokens // W`` sequences at a time; a partial tile is completed with copies whose
values are dropped. Every matrix multiply and attention call of an example's tile then has the
same shape whatever else is in it, so its cached value is bitwise the same however the examples
were grouped (checked on the CPU kernels in fp32 and bf16: tests/test_cache_fill.py), and a
resumed run refills identical values. Packing a batch without padding would not give that: the
GEMM kernels choose their blocking by the number of rows, so a token's last bits depend on how
many tokens share its batch. ``batched_fill=False`` computes one example at a time (the former
default, ~10x slower: eval/perf/cache_fill.py); the two agree to float round-off.

Reuse across runs: ``xmeta.meta.cache_store`` saves a filled cache, verified on load, and
``prebuild_activation_cache`` there fills one over a run's examples once and reuses it in later
runs on the same encoder and data (the recipe's ``activation_cache_dir``).

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
from torch import nn
from torch.func import functional_call

from xmeta.interfaces import Example
from xmeta.meta.modes import eval_mode
from xmeta.meta.precision import autocast_frozen_weights
from xmeta.models.encoder import Encoder
from xmeta.models.inputs import EncoderInputs, HiddenStates, PackedStates
from xmeta.models.packed import PackedLayout, packed_bert_layer

logger = logging.getLogger(__name__)

# numpy has no bfloat16: memory-mapped bf16 rows are stored as int16 bit patterns and viewed back.
_NUMPY_STORAGE = {torch.bfloat16: np.int16, torch.float16: np.float16, torch.float32: np.float32,
                  torch.float64: np.float64}  # fmt: skip
FILL_WIDTH_STEP = 8  # tile widths: token lengths rounded up to a multiple of this
# Cells per fill tile: enough rows for efficient GEMMs, few enough that an episode's handful of new
# examples per width does not pay for a mostly empty tile.
FILL_BATCH_TOKENS = 1024


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
        batched_fill: compute examples in fixed-shape tiles (the default: the same values
            whatever the grouping, see the module docstring); False: one example at a time.
        fill_batch_tokens: cells (sequences x tile width) per tile with ``batched_fill``. Values
            depend on it in the last bits: keep it fixed for a run and its resumptions.

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
        batched_fill: bool = True,
        fill_batch_tokens: int = FILL_BATCH_TOKENS,
    ) -> None:
        if not encoder.supports_packing:
            raise NotImplementedError(f"ActivationCache needs a BERT-style encoder, got {type(encoder.backbone)}")
        if dtype not in _NUMPY_STORAGE:
            raise ValueError(f"unsupported storage dtype {dtype}")
        self.encoder = encoder
        self.layer = encoder.first_trainable_layer
        self._frozen_stack: _FrozenStack | None = None
        self.dtype = dtype
        self.memory_limit_bytes = int(memory_limit_mb * 2**20)
        self.fill_batch_tokens = max(1, int(fill_batch_tokens)) if batched_fill else 0
        self._directory = Path(directory) if directory is not None else None
        self._tmpdir: Path | None = None
        self._memmap: np.memmap | None = None
        self._borrowed = False  # the mapped file is a stored cache's: never written to
        self._precision: str | None = None  # the autocast dtype of the fills ("mixed" if they differed)
        self.loaded_from: Path | None = None
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

    @property
    def fill_precision(self) -> str | None:
        """The autocast dtype the held values were computed under ("mixed" if fills differed; None: none yet)."""
        return self._precision

    def stats(self) -> dict[str, object]:
        return {"examples": len(self), "tokens": self._used, "bytes": self.nbytes, "hits": self.hits,
                "misses": self.misses, "fill_seconds": round(self.fill_seconds, 3),
                "memory_mapped": self.memory_mapped, "layer": self.layer,
                "loaded_from": None if self.loaded_from is None else str(self.loaded_from)}  # fmt: skip

    # ---- filling and reading ------------------------------------------------------------------

    def fill(self, examples: Sequence[Example]) -> int:
        """Compute and store the examples not cached yet; returns how many were computed.

        Raises:
            ValueError: if a cached uid comes back with another text (uids must identify texts).
        """
        self._check_layout()
        todo: dict[str, tuple[str, int]] = {}
        for ex in examples:
            crc = text_crc(ex.text)
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
        precision = autocast_precision(self.encoder.device.type)
        if self._precision is not None and self._precision != precision:
            if self._precision != "mixed":
                logger.warning("activation cache: filled under %s, now under %s: its values mix precisions",
                               self._precision, precision)  # fmt: skip
            precision = "mixed"
        self._precision = precision
        # Frozen layers without dropout (the same value in every episode); the modes found are restored.
        with eval_mode(self.encoder), torch.no_grad():
            if self.fill_batch_tokens:
                self._fill_tiles(uids, ids, [todo[u][1] for u in uids])
            else:
                for uid, seq in zip(uids, ids):
                    input_ids = torch.tensor([seq], dtype=torch.long, device=self.encoder.device)
                    h = self.encoder.hidden_states_at(input_ids, torch.ones_like(input_ids), layer=self.layer)
                    self._put(uid, h[0], todo[uid][1])
        self.misses += len(uids)
        self.fill_seconds += time.perf_counter() - start
        return len(uids)

    def tile_width(self, n_tokens: int) -> int:
        """The fill-tile width of an example of ``n_tokens`` tokens."""
        return min(-(-n_tokens // FILL_WIDTH_STEP) * FILL_WIDTH_STEP, max(n_tokens, self.encoder.cfg.max_length))

    def _fill_tiles(self, uids: list[str], ids: list[list[int]], crcs: list[int]) -> None:
        enc, dev = self.encoder, self.encoder.device
        pad = enc.tokenizer.pad_token_id or 0
        eager = enc.attn_implementation == "eager"
        if self._frozen_stack is None:
            self._frozen_stack = _FrozenStack(enc.backbone.encoder.layer[: self.layer])
        frozen = self._frozen_stack  # its weights cast once under autocast (bitwise the same values)
        by_width: dict[int, list[int]] = {}
        for i, seq in enumerate(ids):
            by_width.setdefault(self.tile_width(len(seq)), []).append(i)
        for width, members in sorted(by_width.items()):
            per_tile = max(1, self.fill_batch_tokens // width)
            for j in range(0, len(members), per_tile):
                chunk = members[j : j + per_tile]
                # A partial tile is completed with copies of its first example (dropped below): the
                # tile's shape, hence every kernel's blocking, never depends on the grouping.
                rows = [ids[i] for i in chunk] + [ids[chunk[0]]] * (per_tile - len(chunk))
                grid = torch.full((per_tile, width), pad, dtype=torch.long)
                for r, seq in enumerate(rows):
                    grid[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                h = enc.backbone.embeddings(input_ids=grid.to(dev))
                h = h.reshape(per_tile * width, h.shape[-1])
                layout = PackedLayout.grid([len(seq) for seq in rows], width, dev)
                h = functional_call(frozen, autocast_frozen_weights(frozen, {}), (h, layout, eager))
                h = h.view(per_tile, width, -1)
                for r, i in enumerate(chunk):
                    self._put(uids[i], h[r, : len(ids[i])], crcs[i])

    def _put(self, uid: str, h: torch.Tensor, crc: int) -> None:
        first = self._reserve(h.shape[0])
        self._store[first : first + h.shape[0]] = h.to("cpu", self.dtype)
        self._index[uid] = (first, h.shape[0], crc)

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
        self._memmap, self._borrowed = None, False
        self._index.clear()
        self._used = 0
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __del__(self) -> None:  # pragma: no cover - best effort for temporary files
        if getattr(self, "_tmpdir", None) is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    # ---- what xmeta.meta.cache_store saves and loads ------------------------------------------

    def contents(self) -> tuple[torch.Tensor, dict[str, tuple[int, int, int]]]:
        """The held rows (real tokens, in fill order; a view) and the index: uid -> (first row,
        number of tokens, crc32 of the text)."""
        return self._store[: self._used], dict(self._index)

    def attach_stored(
        self, path: Path, n_rows: int, index: dict[str, tuple[int, int, int]], precision: str | None
    ) -> None:
        """Hold the rows of a stored cache (``path``: ``n_rows`` raw rows of this cache's dtype) with
        their index, replacing what is held. Read into memory, or memory-mapped copy-on-write past
        ``memory_limit_mb``: the stored file is never written (growing copies the rows first).
        ``cache_store.load_activation_cache`` verifies the files before calling this."""
        self.close()
        shape = (n_rows, self._store.shape[1])
        if n_rows * shape[1] * self._store.element_size() > self.memory_limit_bytes:
            self._memmap = np.memmap(path, dtype=_NUMPY_STORAGE[self.dtype], mode="c", shape=shape)
            self._store, self._borrowed = torch.from_numpy(self._memmap).view(self.dtype), True
        else:
            raw = np.fromfile(path, dtype=_NUMPY_STORAGE[self.dtype]).reshape(shape)
            self._store = torch.from_numpy(raw).view(self.dtype)
        self._used, self._index, self._precision = n_rows, dict(index), precision
        self.loaded_from = Path(path).parent

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
        if self._borrowed:  # a stored cache's file is never written: go on in memory or in a file of ours
            self._store, self._memmap, self._borrowed = self._store[: self._used].clone(), None, False
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


class _FrozenStack(nn.Module):
    """The frozen bottom layers as one module, for ``functional_call`` with their weights cast once."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, h: torch.Tensor, layout: PackedLayout, eager: bool) -> torch.Tensor:
        for layer in self.layers:
            h = packed_bert_layer(layer, h, layout, eager)
        return h


def text_crc(text: str) -> int:
    """crc32 of ``text`` (UTF-8): the index keeps it to tell a reused uid from a changed text."""
    return zlib.crc32(text.encode("utf-8"))


def autocast_precision(device_type: str = "cpu") -> str:
    """The autocast dtype in force on ``device_type`` ("float32" without autocast): fills' values depend on it."""
    if torch.is_autocast_enabled(device_type):
        return str(torch.get_autocast_dtype(device_type)).removeprefix("torch.")
    return "float32"


def activation_cache_for(encoder: Encoder, enabled: bool = True, **kwargs: object) -> FrozenLayers:
    """What ``tokenize_episode(cache_frozen=...)`` should get for a run.

    A run-long ``ActivationCache`` when ``enabled`` and the encoder can run packed layers (BERT,
    XLM-R, e5); otherwise ``PER_EPISODE`` (enabled) or ``RUN_ALL_LAYERS``. ``kwargs`` go to
    ``ActivationCache``.
    """
    if enabled and encoder.supports_packing:
        return ActivationCache(encoder, **kwargs)  # type: ignore[arg-type]
    return FrozenLayers.of(enabled)
