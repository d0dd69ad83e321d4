"""Inference-only BERT layers for a fixed set of weights: Q/K/V fused, LoRA folded in, bias and GELU fused.

Predicting with an adapted classifier runs the same weights over every batch, so the work that
depends only on the weights is done once, when the predictor is built:

- query, key and value in one ``(3 * hidden, hidden)`` matrix: one GEMM and one gather per layer
  instead of three;
- LoRA adapters merged into the frozen weights in fp32 (``W + scale * B @ A``); in bf16 they stay
  a separate low-rank product (merged, the small update would be rounded to W's 8-bit mantissa:
  in a one-off check on 1,000 sentences of the default model that flipped 1.7% of the labels against fp32, 1.1% for
  autocast), all of a layer's adapters as one product whose output the GEMM adds in its epilogue;
- in bf16 on CPU, the weights reordered once into oneDNN's blocked layout and the bias, the GELU
  and the residual addition computed inside the GEMM (``torch.ops.mkldnn._linear_pointwise``, the
  kernel ``torch.compile`` emits for CPU linears; measured here on a (4928, 384) x (384, 1536)
  bf16 product: 4.1 ms for ``F.linear`` with a bias, 2.4 ms fused; with the GELU, ~6 ms against
  4.0 ms). Elsewhere (fp32, GPUs, a torch build without oneDNN) ``F.linear`` on the same fused
  weights.

The layer maths is ``packed_bert_layer``'s (padding-free, attention in length buckets), without
autograd: ``InferenceLayers`` is for ``torch.no_grad`` prediction only. In fp32 it equals the
reference path up to float rounding (LoRA merged before, not after, the product). In bf16 the
GEMMs and attention run in bf16 (bias and GELU applied before the one rounding of a GEMM's
output) and the residual stream and LayerNorms stay float32, as under autocast, where a float32
embedding output keeps every residual sum in float32. Measured on 2,000 SIB-200 test sentences of
the 25 evaluation languages with the default model adapted to Swahili (``eval/perf/predict_layers.py``):
labels equal to fp32's on 99.25% of them at 265 sentences/s; a bf16 residual stream
(``residual_dtype``) gave 99.15% at 304, bf16 autocast through the general path 99.1% at 224.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from xmeta.models.inputs import PackedStates, TokenBatch
from xmeta.models.packed import PackedLayout, pool_packed, supports_packing

# oneDNN builds (and caches, ~1 MB each here) a kernel per GEMM shape: with the token count of every
# batch as a GEMM dimension, a long `xmeta predict` run kept adding kernels (peak RSS +207 MB from
# 10k to 100k lines). Row counts are padded to a multiple of this: at most 24 shapes per weight
# for batches of 64 sentences of <= 96 tokens, ~3% padding rows on SIB-200's sentences.
ROW_QUANTUM = 256
_GELU_ALGORITHMS = {"GELUActivation": "none", "NewGELUActivation": "tanh", "GELUTanh": "tanh"}


def onednn_linear_available(dtype: torch.dtype, device: torch.device) -> bool:
    """True when the fused oneDNN linear runs here: CPU, bf16, a torch build with oneDNN."""
    if device.type != "cpu" or dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    return hasattr(torch.ops.mkldnn, "_linear_pointwise") and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


@dataclass
class LinearWeights:
    """What a linear module applies: ``x @ weight.T + bias + sum(x @ A.T @ B.T)`` (float32 or wider).

    ``lora`` holds the adapters left unmerged, as ``(A, B * scaling)`` pairs.
    """

    weight: Tensor
    bias: Tensor | None
    lora: list[tuple[Tensor, Tensor]]

    @staticmethod
    def stack(parts: Sequence[LinearWeights]) -> LinearWeights:
        """One linear whose outputs are the parts' outputs side by side (e.g. query, key, value)."""
        bias = None
        if any(p.bias is not None for p in parts):
            bias = torch.cat([p.bias if p.bias is not None else p.weight.new_zeros(p.weight.shape[0]) for p in parts])
        lora, offset, total = [], 0, sum(p.weight.shape[0] for p in parts)
        for p in parts:
            for a, b in p.lora:  # B placed at this part's output rows, zeros elsewhere
                full = b.new_zeros(total, b.shape[1])
                full[offset : offset + b.shape[0]] = b
                lora.append((a, full))
            offset += p.weight.shape[0]
        return LinearWeights(torch.cat([p.weight for p in parts]), bias, lora)


class FusedLinear:
    """``act(x @ W.T + b + lora(x)) (+ residual)`` with weights prepared once (cast, reordered for oneDNN).

    Unmerged LoRA adapters run as one low-rank product (their ``A`` stacked, their ``B`` side by
    side) whose output the GEMM adds in its epilogue.

    Args:
        weights: the linear's tensors (``effective_linear``), cast to ``dtype``.
        dtype: compute dtype.
        gelu: None, or the GELU variant to apply: "none" (exact, erf) or "tanh".
        onednn: use ``torch.ops.mkldnn._linear_pointwise`` with a reordered weight (bf16 on CPU).
    """

    def __init__(self, weights: LinearWeights, dtype: torch.dtype, *, gelu: str | None = None, onednn: bool) -> None:
        self.gelu = gelu
        self.onednn = onednn
        w = weights.weight.to(dtype).contiguous()
        self.bias = None if weights.bias is None else weights.bias.to(dtype).contiguous()
        self.weight = torch.ops.mkldnn._reorder_linear_weight(w, None) if onednn else w
        self.lora_a = self.lora_b = None
        if weights.lora:
            self.lora_a = torch.cat([a for a, _ in weights.lora]).to(dtype).contiguous()
            self.lora_b = torch.cat([b for _, b in weights.lora], dim=1).to(dtype).contiguous()

    def __call__(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if self.lora_a is not None:
            delta = F.linear(F.linear(x, self.lora_a), self.lora_b)
            if self.gelu is not None:  # the activation comes after the adapters' addition
                y = F.gelu(self._linear(x, delta, None), approximate=self.gelu)
                return y if residual is None else y + residual
            residual = delta if residual is None else delta + residual
        return self._linear(x, residual, self.gelu)

    def _linear(self, x: Tensor, residual: Tensor | None, gelu: str | None) -> Tensor:
        if self.onednn:
            if residual is not None and gelu is None:
                return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")
            if gelu is not None:
                y = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "gelu", [], gelu)
            else:
                y = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        else:
            y = F.linear(x, self.weight, self.bias)
            if gelu is not None:
                y = F.gelu(y, approximate=gelu)
        return y if residual is None else y + residual


class _Layer:
    """One BERT layer's prepared weights (see ``InferenceLayers``)."""

    def __init__(self, layer: nn.Module, path: str, params: Mapping[str, Tensor], dtype: torch.dtype, onednn: bool):
        sa = layer.attention.self
        self.heads, self.head_dim, self.scaling = sa.num_attention_heads, sa.attention_head_size, sa.scaling
        # LoRA merged into the weights only where the compute dtype keeps the (small) update's digits:
        # in bf16, W + s * B @ A would round the update to W's 8-bit mantissa.
        merge = dtype in (torch.float32, torch.float64)

        def weights(module: nn.Module, name: str) -> LinearWeights:
            return effective_linear(module, f"{path}.{name}", params, merge=merge)

        qkv = [weights(getattr(sa, n), f"attention.self.{n}") for n in ("query", "key", "value")]
        self.qkv = FusedLinear(LinearWeights.stack(qkv), dtype, onednn=onednn)
        so, out = layer.attention.output, layer.output
        self.attn_out = FusedLinear(weights(so.dense, "attention.output.dense"), dtype, onednn=onednn)
        self.ln1 = _layer_norm(so.LayerNorm, f"{path}.attention.output.LayerNorm", params)
        gelu = _GELU_ALGORITHMS[type(layer.intermediate.intermediate_act_fn).__name__]
        self.intermediate = FusedLinear(weights(layer.intermediate.dense, "intermediate.dense"), dtype, gelu=gelu,
                                        onednn=onednn)  # fmt: skip
        self.out = FusedLinear(weights(out.dense, "output.dense"), dtype, onednn=onednn)
        self.ln2 = _layer_norm(out.LayerNorm, f"{path}.output.LayerNorm", params)

    def __call__(self, h: Tensor, layout: PackedLayout, dtype: torch.dtype, rows: Tensor | None) -> Tensor:
        """The layer on sorted packed ``h`` (real tokens first, then any padding rows); ``dtype`` is
        the GEMMs' (``h`` may be wider: the residual stream); ``rows`` gives each row of ``h`` its
        row of the attention output (None: the grid's rows are ``h``'s)."""
        heads, dh = self.heads, self.head_dim
        width = heads * dh
        qkv = self.qkv(h.to(dtype))  # (rows of h, 3 * H * dh)
        sizes = [b.n * b.width for b in layout.buckets]
        cells = [qkv[: sizes[0]]] if layout.identity else qkv.index_select(0, layout.gather).split(sizes)
        parts = []
        for b, c in zip(layout.buckets, cells):
            q, k, v = c.view(b.n, b.width, 3, heads, dh).permute(2, 0, 3, 1, 4).unbind(0)  # (n, H, width, dh)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=b.keep, scale=self.scaling)
            parts.append(ctx.transpose(1, 2).reshape(b.n * b.width, width))
        ctx = parts[0] if len(parts) == 1 else torch.cat(parts)
        if rows is not None:
            ctx = ctx.index_select(0, rows)
        attn = self.ln1(_add(self.attn_out, ctx, h))
        return self.ln2(_add(self.out, self.intermediate(attn.to(dtype)), attn))


def _add(linear: FusedLinear, x: Tensor, residual: Tensor) -> Tensor:
    """``linear(x) + residual``: in the GEMM's epilogue when both have one dtype, else added after (promoted)."""
    return linear(x, residual=residual) if residual.dtype == x.dtype else linear(x) + residual


class InferenceLayers:
    """The encoder's BERT layers prepared for ``torch.no_grad`` prediction with fixed weights.

    Build with ``InferenceLayers.build``; call on encoder inputs to get pooled sentence embeddings
    (float32, or the compute dtype where it is wider), as ``Encoder.forward`` would give them:
    packed hidden states (``PackedStates``, the padding-free layout), or a right-padded
    ``TokenBatch`` with little padding, which runs as one fixed grid (every cell a row, padded keys
    masked): no gathers or scatters at all.
    """

    def __init__(self, encoder: nn.Module, layers: list[_Layer], dtype: torch.dtype, onednn: bool) -> None:
        self.embeddings = encoder.backbone.embeddings
        self.right_padded = getattr(encoder.tokenizer, "padding_side", "right") == "right"
        self.layers = layers
        self.dtype = dtype
        self.out_dtype = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype  # pooled in it
        self.residual_dtype = self.out_dtype  # of the hidden states between layers (see the module)
        self.row_quantum = ROW_QUANTUM if onednn else 1  # GEMM row counts are multiples of it
        self.pool = encoder.pool
        self.pooling = encoder.cfg.pooling
        self.normalize = encoder.cfg.normalize
        self.onednn = onednn

    @classmethod
    def build(cls, encoder: nn.Module, params: Mapping[str, Tensor], dtype: torch.dtype) -> InferenceLayers | None:
        """Prepared layers of ``encoder`` (an ``xmeta.models.encoder.Encoder``) with the tensors in
        ``params`` (names relative to the encoder, e.g. adapted LoRA tensors) replacing its own.

        Returns None where the layers are not plain BERT layers with plain LoRA adapters (other
        architectures, DoRA or merged adapters, another activation, adapted embeddings): the
        caller keeps the general path.
        """
        backbone = encoder.backbone
        if not supports_packing(backbone) or any(n.startswith("backbone.embeddings.") for n in params):
            return None
        device = next(backbone.parameters()).device
        onednn = onednn_linear_available(dtype, device)
        prepared = []
        with torch.no_grad():
            for i, layer in enumerate(backbone.encoder.layer):
                if type(layer.intermediate.intermediate_act_fn).__name__ not in _GELU_ALGORITHMS:
                    return None
                try:
                    prepared.append(_Layer(layer, f"backbone.encoder.layer.{i}", params, dtype, onednn))
                except _Unsupported:
                    return None
        return cls(encoder, prepared, dtype, onednn)

    @classmethod
    def for_precision(cls, encoder: nn.Module, params: Mapping[str, Tensor], precision: str) -> InferenceLayers | None:
        """``build`` for an inference precision: "bf16", or "fp32" (the encoder's own dtype)."""
        return cls.build(encoder, params, torch.bfloat16 if precision == "bf16" else encoder.dtype)

    @torch.no_grad()
    def __call__(self, batch: TokenBatch | PackedStates) -> Tensor:
        """Sentence embeddings ``(batch, hidden)``: float32 in bf16/fp16, else in the compute dtype."""
        if isinstance(batch, TokenBatch) and not self.right_padded:
            h = self.embeddings(input_ids=batch.input_ids, token_type_ids=batch.token_type_ids)
            mask = batch.attention_mask.bool()
            batch = PackedStates(h[mask], mask.sum(1), 0)
        if isinstance(batch, PackedStates):
            layout = PackedLayout.of(batch.lengths)
            h = self._run(layout.sort(batch.hidden_states), layout, batch.start_layer)
            emb = pool_packed(h.to(self.out_dtype), layout, self.pooling)
        elif isinstance(batch, TokenBatch):
            h = self.embeddings(input_ids=batch.input_ids, token_type_ids=batch.token_type_ids)
            n, width, hidden = h.shape
            layout = PackedLayout.grid(batch.attention_mask.sum(1).tolist(), width, h.device)
            h = self._run(h.reshape(n * width, hidden), layout, 0).view(n, width, hidden).to(self.out_dtype)
            return self.pool(h, batch.attention_mask)  # the encoder's own pooling (and normalisation)
        else:
            raise TypeError(f"InferenceLayers takes TokenBatch or PackedStates, got {type(batch).__name__}")
        return F.normalize(emb, dim=-1) if self.normalize else emb

    def _run(self, h: Tensor, layout: PackedLayout, start: int) -> Tensor:
        real = h.shape[0]
        h = h.to(self.residual_dtype)
        rows = None if layout.identity else layout.scatter
        pad = -real % self.row_quantum
        if pad:  # rows that no attention reads; each takes attention output row 0
            h = F.pad(h, (0, 0, 0, pad))
            base = torch.arange(real, device=h.device) if rows is None else rows
            rows = torch.cat([base, base.new_zeros(pad)])
        for layer in self.layers[start:]:
            h = layer(h, layout, self.dtype, rows)
        return h[:real]


class _Unsupported(Exception):
    """A module the prepared layers do not reproduce (the caller falls back to the general path)."""


def effective_linear(module: nn.Module, path: str, params: Mapping[str, Tensor], *, merge: bool) -> LinearWeights:
    """The tensors ``module`` (``nn.Linear`` or a peft LoRA ``Linear``) applies, in float32 or wider.

    Tensors named ``path.<name>`` in ``params`` replace the module's own. Plain LoRA adapters are
    merged (``W + scaling * B @ A``, for each active adapter) with ``merge``, else kept as pairs.

    Raises:
        _Unsupported: another kind of module or adapter (DoRA, merged, fan-in-fan-out).
    """

    def get(name: str, own: Tensor | None) -> Tensor | None:
        t = params.get(f"{path}.{name}", own)
        return None if t is None else t.detach().to(torch.promote_types(t.dtype, torch.float32))

    if isinstance(module, nn.Linear):
        return LinearWeights(get("weight", module.weight), get("bias", module.bias), [])
    base = getattr(module, "base_layer", None)
    lora_a = getattr(module, "lora_A", None)
    if not isinstance(base, nn.Linear) or lora_a is None:
        raise _Unsupported(f"{path}: {type(module).__name__}")
    if getattr(module, "merged", False) or getattr(module, "fan_in_fan_out", False):
        raise _Unsupported(f"{path}: merged or fan-in-fan-out LoRA")
    use_dora = getattr(module, "use_dora", {})
    out = LinearWeights(get("base_layer.weight", base.weight), get("base_layer.bias", base.bias), [])
    for name in getattr(module, "active_adapters", []):
        if name not in lora_a or use_dora.get(name, False):
            raise _Unsupported(f"{path}: adapter {name!r} is not a plain LoRA adapter")
        a = get(f"lora_A.{name}.weight", lora_a[name].weight)
        b = get(f"lora_B.{name}.weight", module.lora_B[name].weight) * float(module.scaling[name])
        if merge:
            out.weight = out.weight + b @ a
        else:
            out.lora.append((a, b))
    return out


def _layer_norm(module: nn.LayerNorm, path: str, params: Mapping[str, Tensor]) -> Callable[[Tensor], Tensor]:
    """``module``'s LayerNorm with its own float32 parameters. The residual stream it normalises is
    float32 by default; a narrower one (``InferenceLayers.residual_dtype``) keeps float32
    parameters on CPU (its kernel takes bf16 inputs with float32 parameters, as under autocast)
    and casts them to the input's dtype elsewhere."""
    weight = params.get(f"{path}.weight", module.weight).detach()
    bias = params.get(f"{path}.bias", module.bias)
    bias = None if bias is None else bias.detach()
    shape, eps = tuple(module.normalized_shape), module.eps

    def norm(x: Tensor) -> Tensor:
        if x.dtype == weight.dtype or x.device.type == "cpu":
            return F.layer_norm(x, shape, weight, bias, eps)
        return F.layer_norm(x, shape, weight.to(x.dtype), None if bias is None else bias.to(x.dtype), eps)

    return norm
