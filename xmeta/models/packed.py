"""Padding-free BERT layers: position-wise maths on packed tokens, attention in length buckets.

A padded batch of sentences spends most of its compute on padding when lengths vary (a
7-way 5-shot SIB-200 episode at max_length 64: ~2,450 real tokens in a 35 x 64 grid, 1.7x).
Here the hidden states are packed: ``(tokens, hidden)``, the real tokens only. Every linear
layer, LayerNorm and activation runs on that matrix. Only attention needs a ``(batch, heads,
len, len)`` grid: sequences are sorted by length once per forward and split into a few buckets
of similar length (``length_buckets``), each padded only to its own longest sequence.

The layer maths is HF's ``BertLayer`` (post-LayerNorm, dropout where HF has it); the
submodules are called as modules, so peft's LoRA layers and ``torch.func.functional_call``
parameter swaps work unchanged. ``eager`` attention is written out (twice differentiable, for
second-order MAML); otherwise ``scaled_dot_product_attention`` runs a fused kernel.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

# Per-bucket overhead in units of attention cells (one query x key pair of one sequence): about
# one 64-token sequence. Fewer, fuller buckets below that; finer buckets above it.
BUCKET_OVERHEAD_CELLS = 4096
MAX_BUCKETS = 8
_SLOW_FUSED_BACKWARD = (torch.bfloat16, torch.float16)
_LAYOUTS: dict[int, tuple[weakref.ref, PackedLayout, int]] = {}  # id(lengths) -> (ref, layout, version)


def supports_packing(backbone: nn.Module) -> bool:
    """True for BERT-style encoders (BERT, XLM-R, e5) whose layers ``packed_bert_layer`` reproduces."""
    cfg = backbone.config
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if layers is None or getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
        return False
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        return False  # relative position scores live inside the attention module
    if getattr(cfg, "chunk_size_feed_forward", 0):
        return False
    need = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output",
            "intermediate", "output")  # fmt: skip
    return all(_has_path(layer, p) for layer in layers for p in need)


def _has_path(module: nn.Module, path: str) -> bool:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return False
    return True


def length_buckets(
    lengths: Sequence[int], overhead: int = BUCKET_OVERHEAD_CELLS, max_buckets: int = MAX_BUCKETS
) -> list[int]:
    """Split lengths sorted in descending order into contiguous buckets; returns the bucket sizes.

    Minimises the padded attention area ``sum(n_b * L_b^2)`` plus ``overhead`` per bucket (exact
    dynamic programme; a few dozen sequences per call).
    """
    n = len(lengths)
    if n == 0:
        return []
    inf = float("inf")
    # best[k][j]: min cost of covering the first j sequences with k buckets
    best = [[inf] * (n + 1) for _ in range(max_buckets + 1)]
    cut = [[0] * (n + 1) for _ in range(max_buckets + 1)]
    best[0][0] = 0.0
    for k in range(1, max_buckets + 1):
        for j in range(1, n + 1):
            for i in range(k - 1, j):  # bucket = sequences i..j-1; its longest is lengths[i]
                c = best[k - 1][i] + (j - i) * lengths[i] ** 2 + overhead
                if c < best[k][j]:
                    best[k][j], cut[k][j] = c, i
    k = min(range(1, max_buckets + 1), key=lambda kk: best[kk][n])
    sizes, j = [], n
    while k > 0:
        i = cut[k][j]
        sizes.append(j - i)
        j, k = i, k - 1
    return sizes[::-1]


@dataclass
class _Bucket:
    n: int  # sequences (all of them of length <= width)
    width: int  # longest length
    keep: Tensor | None  # (n, 1, 1, width) True for real keys; None when all n have the same length


@dataclass
class PackedLayout:
    """How a packed batch is laid out: sequences sorted by length (descending), attention buckets.

    ``order`` permutes the caller's packed tokens into sorted order (``None`` if already sorted);
    ``segment`` gives each sorted token its sequence's original index (for pooling) and
    ``firsts`` the sorted row of each original sequence's first token. ``gather`` maps the cells
    of every bucket's ``(n, width)`` grid, bucket after bucket, to sorted token rows (padding
    cells point at row 0: their keys are masked and their outputs dropped, so they get exactly
    zero gradient); ``scatter`` lists the real cells in token order.
    """

    lengths: Tensor
    order: Tensor | None
    segment: Tensor
    firsts: Tensor
    buckets: list[_Bucket]
    gather: Tensor
    scatter: Tensor
    batch: int
    identity: bool = False  # one bucket whose grid is the rows themselves (``grid``): no gather/scatter

    @classmethod
    def of(cls, lengths: Tensor) -> PackedLayout:
        """The layout for ``lengths``, built once per lengths tensor: an episode's batch is reused
        by every inner step, so the host sync and index building happen once, not per step."""
        hit = _LAYOUTS.get(id(lengths))
        if hit is not None and hit[0]() is lengths and hit[2] == lengths._version:
            return hit[1]
        layout = cls._build(lengths)
        key = id(lengths)
        _LAYOUTS[key] = (weakref.ref(lengths), layout, lengths._version)
        weakref.finalize(lengths, _LAYOUTS.pop, key, None)
        return layout

    @classmethod
    def _build(cls, lengths: Tensor) -> PackedLayout:
        device = lengths.device
        lens = [int(x) for x in lengths.tolist()]  # one host sync per forward, not per layer
        batch = len(lens)
        seq_order = sorted(range(batch), key=lambda i: -lens[i])  # stable: ties keep their order
        starts = [0] * batch
        acc = 0
        for i, n in enumerate(lens):
            starts[i], acc = acc, acc + n
        sorted_lens = [lens[i] for i in seq_order]
        if seq_order == list(range(batch)):
            order = None
        else:
            order = torch.tensor([r for i in seq_order for r in range(starts[i], starts[i] + lens[i])], device=device)
        segment = torch.repeat_interleave(
            torch.tensor(seq_order, device=device), torch.tensor(sorted_lens, device=device), output_size=acc
        )
        sorted_starts = [0] * batch
        pos = 0
        for rank, i in enumerate(seq_order):
            sorted_starts[i] = pos
            pos += sorted_lens[rank]
        firsts = torch.tensor(sorted_starts, device=device)
        buckets, gathers, valids, seq, row = [], [], [], 0, 0
        for size in length_buckets(sorted_lens):
            blens = sorted_lens[seq : seq + size]
            width = blens[0]
            lt = torch.tensor(blens, device=device)
            cols = torch.arange(width, device=device)
            valid = cols.unsqueeze(0) < lt.unsqueeze(1)
            offs = row + torch.cumsum(lt, 0) - lt
            gathers.append(torch.where(valid, offs.unsqueeze(1) + cols, torch.zeros_like(cols)).flatten())
            valids.append(valid.flatten())
            keep = valid[:, None, None, :] if blens[-1] < width else None
            buckets.append(_Bucket(size, width, keep))
            seq, row = seq + size, row + sum(blens)
        gather = torch.cat(gathers)
        scatter = torch.nonzero(torch.cat(valids)).squeeze(1)
        return cls(lengths, order, segment, firsts, buckets, gather, scatter, batch)

    @classmethod
    def grid(cls, lengths: Sequence[int], width: int, device: torch.device | None = None) -> PackedLayout:
        """A fixed ``(len(lengths), width)`` grid of right-padded sequences, rows ``i * width + j``.

        Every cell is a row of ``h`` (padding rows included), the keys beyond each length are
        masked (always, even where none is padding), and nothing is reordered. The shapes of the
        computation therefore depend only on ``(len(lengths), width)``, never on which sequences
        share the grid: ``ActivationCache`` relies on this for values independent of the batch.
        For running layers only: pooling over it would count the padding cells.
        """
        n = len(lengths)
        if n == 0 or min(lengths) < 1 or max(lengths) > width:
            raise ValueError(f"grid lengths must be in [1, {width}], got {list(lengths)}")
        lt = torch.tensor(list(lengths), device=device)
        valid = torch.arange(width, device=device).unsqueeze(0) < lt.unsqueeze(1)
        cells = torch.arange(n * width, device=device)
        segment = torch.arange(n, device=device).repeat_interleave(width)
        firsts = torch.arange(0, n * width, width, device=device)
        return cls(lt, None, segment, firsts, [_Bucket(n, width, valid[:, None, None, :])], cells, cells, n, True)

    def sort(self, h: Tensor) -> Tensor:
        return h if self.order is None else h.index_select(0, self.order)


def packed_bert_layer(layer: nn.Module, h: Tensor, layout: PackedLayout, eager: bool) -> Tensor:
    """One BERT layer on length-sorted packed tokens ``h (T, d)``."""
    sa = layer.attention.self
    heads, head_dim = sa.num_attention_heads, sa.attention_head_size
    p_drop = sa.dropout.p if sa.training else 0.0
    sizes = [b.n * b.width for b in layout.buckets]

    def grids(x: Tensor) -> list[Tensor]:  # (T, H*dh) -> per bucket (n, H, width, dh), one gather
        cells = [x] if layout.identity else x.index_select(0, layout.gather).split(sizes)
        return [c.view(b.n, b.width, heads, head_dim).transpose(1, 2) for c, b in zip(cells, layout.buckets)]

    parts = []
    for b, qb, kb, vb in zip(layout.buckets, grids(sa.query(h)), grids(sa.key(h)), grids(sa.value(h))):
        if eager:  # HF's eager maths; the fused SDPA kernels have no double backward
            scores = (qb @ kb.transpose(-1, -2)) * sa.scaling
            if b.keep is not None:
                scores = scores.masked_fill(~b.keep, torch.finfo(scores.dtype).min)
            probs = nn.functional.dropout(scores.softmax(-1), p=p_drop, training=sa.training)
            ctx = probs @ vb
        else:
            ctx = _sdpa(qb, kb, vb, b.keep, p_drop, sa.scaling)
        parts.append(ctx.transpose(1, 2).reshape(b.n * b.width, heads * head_dim))
    ctx = parts[0] if len(parts) == 1 else torch.cat(parts)
    if not layout.identity:
        ctx = ctx.index_select(0, layout.scatter)
    attn = layer.attention.output(ctx, h)
    return layer.output(layer.intermediate(attn), attn)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None, p_drop: float, scale: float) -> Tensor:
    if (
        q.device.type == "cpu"
        and torch.is_grad_enabled()
        and (q.dtype in _SLOW_FUSED_BACKWARD or torch.is_autocast_enabled("cpu"))
    ):
        # The CPU flash kernel's bf16/fp16 backward is ~6x slower than its fp32 one (torch 2.13),
        # and attention is a few % of the FLOPs: when training, run it in fp32 (autocast off).
        with torch.autocast("cpu", enabled=False):
            out = nn.functional.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=keep, dropout_p=p_drop, scale=scale
            )
        return out.to(q.dtype)
    return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p_drop, scale=scale)


def pool_packed(h: Tensor, layout: PackedLayout, pooling: str) -> Tensor:
    """Mean (over real tokens) or CLS pooling of sorted packed ``h`` back to the original order."""
    if pooling == "cls":
        return h.index_select(0, layout.firsts)
    summed = h.new_zeros(layout.batch, h.shape[1]).index_add(0, layout.segment, h)
    return summed / layout.lengths.to(h.dtype).clamp_min(1.0).unsqueeze(1)
