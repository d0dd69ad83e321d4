"""What the perf scripts share: the data directory, the measured model and its episodes, memory and FLOPs.

``measure.py`` runs as ``__main__`` (``run.py`` starts it once per measurement), so the modules it
dispatches to (``latency.py``, ``peer_higher.py``) and ``bf16_check.py`` import from here: importing
``measure`` back would load it a second time. Episodes, data loading, precision and memory readings
are the library's own (``xmeta.data``, ``xmeta.meta.learners.inference_precision``,
``xmeta.bench.cost``), so the benchmark measures what users run. They are imported where used, so
that each measurement process loads only what it measures (its peak RSS counts every module).

Memory figures are MiB: ``rss_peak_mb`` is ``ru_maxrss`` of the process (model loading included);
``status_mb("VmHWM")`` after ``reset_peak()`` is the high-water mark while episodes run.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


def data_dir() -> Path:
    """``$XMETA_DATA_DIR`` (relative to the repository root if relative), else ``../shared/data``."""
    from xmeta.data import resolve_data_dir

    path = resolve_data_dir() or ROOT.parent / "shared" / "data"
    return path if path.is_absolute() else (ROOT / path).resolve()


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """The library's CPU autocast at ``precision`` (``fp32`` or ``bf16``), as ``--precision`` uses it."""
    from xmeta.meta.learners import inference_precision

    return inference_precision(precision, CPU)


# ---- memory ---------------------------------------------------------------------------------


def rss_peak_mb() -> float:
    """Lifetime peak RSS of this process (``ru_maxrss``), MiB."""
    from xmeta.bench.cost import lifetime_peak_kib

    return lifetime_peak_kib() / 1024


def status_mb(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (None where /proc is missing)."""
    from xmeta.bench.cost import proc_status_kib

    kib = proc_status_kib(field)
    return None if kib is None else kib / 1024


def reset_peak() -> float | None:
    """Release freed heap pages, reset the RSS high-water mark; returns the current RSS (MiB)."""
    from xmeta.bench.cost import reset_kernel_peak

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed pages back to the OS, so the new peak starts low
    reset_kernel_peak()
    return status_mb("VmRSS")


# ---- FLOPs ----------------------------------------------------------------------------------


def _register_cpu_flops() -> None:
    """FlopCounterMode knows the CUDA attention kernels and aten's matmuls; add the CPU flash kernel
    (same maths) and the fused oneDNN linear of xmeta's prediction layers (``xmeta.models.inference``)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    if aten._scaled_dot_product_flash_attention_for_cpu in fc.flop_registry:
        return

    @fc.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    @fc.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    mkldnn = getattr(torch.ops, "mkldnn", None)
    if mkldnn is None or not hasattr(mkldnn, "_linear_pointwise"):
        return

    @fc.register_flop_formula(mkldnn._linear_pointwise)
    def _linear(x_shape, *args, out_shape=None, **kwargs) -> int:
        # (X, W, B, attr, scalars, algorithm) or, for the .binary overload, (X, other, W, B, attr)
        w_shape = args[0] if isinstance(args[2], str) else args[1]
        rows = 1
        for d in x_shape[:-1]:
            rows *= d
        return 2 * rows * x_shape[-1] * w_shape[0]  # X (..., in) @ W (out, in).T, as for addmm


@contextlib.contextmanager
def count_flops(box: list[int]):
    """Matmul FLOPs (mm, bmm, addmm, attention) of the block, added to ``box[0]``."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_flops()
    mode = FlopCounterMode(display=False)
    with mode:
        yield
    box[0] += mode.get_total_flops()


# ---- the measured setting -------------------------------------------------------------------


def build_setting(spec: dict):
    """(encoder config, meta config, episode shape, precision) of a measurement."""
    import dataclasses

    from xmeta.config import load_config
    from xmeta.meta import MetaConfig
    from xmeta.models.encoder import EncoderConfig
    from xmeta.training.config import TrainConfig

    if spec["algorithm"] == "default":  # the head-only ProtoMAML recipe config, exactly as configured
        cfg = load_config(TrainConfig, str(ROOT / "recipes" / "configs" / "protomaml_head.yaml"), [])
        enc_cfg, meta_cfg = cfg.encoder, cfg.meta
        shape = {"n_way": cfg.data.n_way, "k_shot": cfg.data.k_shot, "q_query": cfg.data.q_query,
                 "langs": list(cfg.data.train_langs)}  # fmt: skip
        precision = spec.get("precision", "default")
        if precision == "default":
            precision = "bf16" if cfg.mixed_precision == "bf16" else "fp32"
        if spec.get("layout") == "all":
            enc_cfg = dataclasses.replace(enc_cfg, lora_top_layers=None, layers_to_transform=None)
    else:
        top = None if spec["layout"] == "all" else int(spec["layout"].removeprefix("top"))
        enc_cfg = EncoderConfig(model=spec["model"], max_length=spec["max_length"], lora_r=spec["lora_r"],
                                lora_alpha=2.0 * spec["lora_r"], target_modules=("query", "value"),
                                lora_top_layers=top)  # fmt: skip
        meta_cfg = MetaConfig(algorithm=spec["algorithm"], inner_steps=spec["inner_steps"])
        shape = {k: spec[k] for k in ("n_way", "k_shot", "q_query", "langs")}
        precision = spec.get("precision", "fp32")
    meta_cfg = dataclasses.replace(meta_cfg, recompute_inner_steps=bool(spec.get("recompute", True)))
    return enc_cfg, meta_cfg, shape, precision


def load_episodes(shape: dict, n: int, seed: int) -> list:
    """The first ``n`` meta-training episodes of the recipe's sampler (train split) for ``shape``."""
    from xmeta.data import EpisodeSampler, load_task

    ds = load_task("sib200", data_dir=data_dir(), langs=list(shape["langs"]), splits=["train"])
    sampler = EpisodeSampler.for_meta_training(ds, n_way=shape["n_way"], k_shot=shape["k_shot"],
                                               q_query=shape["q_query"], langs=list(shape["langs"]), seed=seed)  # fmt: skip
    return [sampler.episode(i) for i in range(n)]


def eval_sampler(lang: str, n_way: int, k_shot: int, q_query: int, seed: int, root: Path | None = None):
    """The benchmark's evaluation episodes of ``lang``: support from dev, ``q_query`` per class from test.

    ``xmeta bench`` draws its episodes with the same sampler settings (``xmeta.bench.episodes``), so
    episode ``i`` here is the benchmark's episode ``i`` of ``lang`` for the same seed and shape.
    ``root`` is the data directory (default :func:`data_dir`).
    """
    from xmeta.data import EpisodeSampler, load_task

    ds = load_task("sib200", data_dir=root or data_dir(), langs=[lang], splits=["dev", "test"])
    return EpisodeSampler.for_evaluation(ds, n_way=n_way, k_shot=k_shot, q_query=q_query, seed=seed)


def eval_episode(lang: str, n_way: int, k_shot: int, n_queries: int, seed: int) -> tuple[Any, Any]:
    """Support and the first ``n_queries`` queries of evaluation episode 0 of ``lang``."""
    per_class = -(-n_queries // n_way)
    ep = eval_sampler(lang, n_way, k_shot, per_class, seed).episode(0)
    return ep.support, ep.query[:n_queries]


def build_model(enc_cfg, meta_cfg, lora_std: float, seed: int):
    from xmeta.meta import MetaModel, encoder_config_for
    from xmeta.models.encoder import Encoder

    torch.manual_seed(seed)
    encoder = Encoder.from_config(encoder_config_for(enc_cfg, meta_cfg))  # eager attention if second order
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the same adapter in every process; non-zero B, as after some training
        for name, p in encoder.named_parameters():
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
            elif "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * lora_std)
    return MetaModel(encoder, meta_cfg)


def token_counts(encoder, episode) -> tuple[int, int]:
    """(real tokens, tokens of the padded support + query batches) of an episode."""
    real = padded = 0
    for part in (episode.support, episode.query):
        lens = [len(x) for x in encoder.token_ids([e.text for e in part])]
        real += sum(lens)
        padded += len(lens) * max(lens)
    return real, padded
