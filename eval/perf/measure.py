"""One performance measurement, run in its own process by ``eval/perf/run.py`` (``--child SPEC``).

Kinds: ``matmul`` (dense GEMM throughput), ``episode`` (one meta-training episode: seconds,
FLOPs, peak memory), ``higher`` (the same second-order episode with the ``higher`` library),
``latency`` (adapting a meta-learned encoder to a 7x5 support set, then per-query prediction)
and ``icl`` (the in-context baseline's per-query latency). Each prints one JSON line.

Memory: ``peak_rss_mb`` is ``ru_maxrss`` of this process (model loading included);
``episode_peak_rss_mb`` is the high-water mark reset after loading and cache filling (Linux
``/proc/self/clear_refs``), i.e. the peak while episodes run, model resident.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


# ---- memory and timing helpers --------------------------------------------------------------


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> float | None:
    """Release freed heap pages, reset the RSS high-water mark; returns the current RSS (MB)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    return _status_mb("VmRSS")


def autocast(precision: str) -> contextlib.AbstractContextManager:
    dtype = PRECISIONS[precision]
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _register_cpu_sdpa_flops() -> None:
    """FlopCounterMode knows the CUDA attention kernels; add the CPU flash kernel (same maths)."""
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


@contextlib.contextmanager
def count_flops(box: list[int]):
    """Matmul FLOPs (mm, bmm, addmm, attention) of the block, added to ``box[0]``."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_sdpa_flops()
    mode = FlopCounterMode(display=False)
    with mode:
        yield
    box[0] += mode.get_total_flops()


# ---- matmul ---------------------------------------------------------------------------------


def measure_matmul(spec: dict) -> dict:
    out: dict[str, Any] = {}
    seconds = spec.get("seconds", 1.0)
    for prec in ("fp32", "bf16"):
        dtype = torch.float32 if prec == "fp32" else torch.bfloat16
        shapes = {}
        for m, k, n in spec["shapes"]:
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            for _ in range(3):
                a @ b
            best = 0.0
            for _ in range(spec.get("repeats", 3)):  # best of a few windows: other load only slows down
                t0, reps = time.perf_counter(), 0
                while time.perf_counter() - t0 < seconds / spec.get("repeats", 3):
                    a @ b
                    reps += 1
                best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9)
            shapes[f"{m}x{k}x{n}"] = round(best, 1)
        # The best rate of any dense GEMM measured (square and the model's own shapes).
        out[prec] = {"gflops": max(shapes.values()), "by_shape": shapes}
    return out


# ---- meta-training episodes -----------------------------------------------------------------


def data_dir() -> str:
    path = Path(os.environ.get("XMETA_DATA_DIR", ROOT.parent / "shared" / "data"))
    return str(path if path.is_absolute() else (ROOT / path).resolve())


def build_setting(spec: dict):
    """(encoder config, meta config, episode shape, precision) of a measurement."""
    import dataclasses

    from xmeta.config import load_config
    from xmeta.meta import MetaConfig
    from xmeta.models.encoder import EncoderConfig
    from xmeta.training.config import TrainConfig

    if spec["algorithm"] == "default":  # the default recipe, exactly as configured
        cfg = load_config(TrainConfig, str(ROOT / "recipes" / "configs" / "default.yaml"), [])
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


def load_episodes(shape: dict, n: int, seed: int):
    from xmeta.data import EpisodeSampler, load_task

    ds = load_task("sib200", data_dir=data_dir(), langs=list(shape["langs"]), splits=["train"])
    sampler = EpisodeSampler.for_meta_training(ds, n_way=shape["n_way"], k_shot=shape["k_shot"],
                                               q_query=shape["q_query"], langs=list(shape["langs"]), seed=seed)  # fmt: skip
    return [sampler.episode(i) for i in range(n)]


def build_model(enc_cfg, meta_cfg, lora_std: float, seed: int):
    from xmeta.meta import MetaModel
    from xmeta.models.encoder import Encoder

    torch.manual_seed(seed)
    encoder = Encoder.from_config(enc_cfg)
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


def episode_batch(mode: str, encoder, episode, cache):
    from xmeta.meta import EpisodeTensors, tokenize_episode

    if mode == "uncached":
        return tokenize_episode(encoder, episode)
    if mode == "batch_cache":
        return tokenize_episode(encoder, episode, cache_frozen=True)
    if mode == "cached":
        return tokenize_episode(encoder, episode, cache_frozen=cache)
    if mode == "cached_padded":  # ablation: the run-long cache, without packing
        ep = tokenize_episode(encoder, episode)
        sup, qry = (cache.batch(x, packed=False) for x in (episode.support, episode.query))
        return EpisodeTensors(sup, ep.support_labels, qry, ep.query_labels, ep.n_way)
    raise ValueError(f"unknown mode {mode!r}")


def measure_episode(spec: dict) -> dict:
    from xmeta.meta import ActivationCache, meta_step_loss

    enc_cfg, meta_cfg, shape, precision = build_setting(spec)
    n_warm, n_timed = spec.get("warmup", 1), spec["episodes"]
    episodes = load_episodes(shape, n_warm + n_timed, spec["seed"])
    model = build_model(enc_cfg, meta_cfg, spec.get("lora_std", 0.01), spec["seed"])
    model.train(spec.get("train_mode", False))
    encoder = model.encoder
    params = model.meta_params()
    opt = torch.optim.AdamW(params.values(), lr=1e-4)
    mode = spec["mode"]
    cache = None
    fill_ms = None
    if mode.startswith("cached"):
        storage = {"bf16": torch.bfloat16, "fp32": torch.float32}[spec.get("cache_dtype", "bf16")]
        cache = ActivationCache(encoder, dtype=storage)
        examples = [e for ep in episodes for e in (*ep.support, *ep.query)]
        with autocast(precision):
            cache.fill(examples)  # steady state of a run: every example seen before
        fill_ms = 1000 * cache.fill_seconds / max(1, cache.misses)
    rss_before = reset_peak()

    def step(ep) -> tuple[float, float]:
        with autocast(precision):
            batch = episode_batch(mode, encoder, ep, cache)
            loss, metrics = meta_step_loss(model, params, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss), float(metrics["acc"])

    warm_losses = [step(episodes[i])[0] for i in range(n_warm)]  # one-off costs; untimed
    times, losses, accs = [], [], []
    for ep in episodes[n_warm:]:
        t0 = time.perf_counter()
        loss, acc = step(ep)
        times.append(time.perf_counter() - t0)
        losses.append(loss)
        accs.append(acc)
    peak, episode_peak = rss_peak_mb(), _status_mb("VmHWM")
    tokens = [token_counts(encoder, ep) for ep in episodes]
    result = {
        "seconds": times,
        "seconds_per_episode": statistics.median(times),
        "episodes_per_s": 1.0 / statistics.median(times),
        "losses": losses,
        # Before any optimizer step: comparable across modes (Adam's first steps amplify float noise).
        "first_loss": warm_losses[0] if warm_losses else None,
        "query_acc": accs,
        "peak_rss_mb": round(peak, 1),
        "episode_peak_rss_mb": None if episode_peak is None else round(episode_peak, 1),
        "rss_before_episodes_mb": None if rss_before is None else round(rss_before, 1),
        "real_tokens": statistics.mean(t[0] for t in tokens[n_warm:]),
        "padded_tokens": statistics.mean(t[1] for t in tokens[n_warm:]),
        "attn_implementation": encoder.attn_implementation,
        "first_trainable_layer": encoder.first_trainable_layer,
        "precision": precision,
        "encoder": {
            "max_length": enc_cfg.max_length,
            "lora_r": enc_cfg.lora_r,
            "lora_layers": list(encoder.lora_layers),
        },
        "meta": {
            "algorithm": meta_cfg.algorithm,
            "inner_steps": meta_cfg.inner_steps,
            "inner_params": meta_cfg.inner_params,
            "head": meta_cfg.effective_head,
            "second_order": meta_cfg.second_order,
            "recompute_inner_steps": meta_cfg.recompute_inner_steps,
        },  # fmt: skip
    }
    if cache is not None:
        result["cache"] = {**cache.stats(), "fill_ms_per_example": round(fill_ms, 2)}
    # FLOPs, counted after timing (the peaks above are already read) on the first episode and
    # scaled to the timed ones by their real tokens (cost is ~linear in tokens).
    scale = result["real_tokens"] / tokens[0][0]
    result["flops_executed"] = (
        episode_flops(model, lambda: episode_batch(mode, encoder, episodes[0], cache), precision) * scale
    )
    fm = model_flops(mode, model, episodes[0], cache, precision)
    result["flops_model"] = None if fm is None else fm * scale
    return result


def episode_flops(model, make_batch, precision: str, cfg=None) -> int:
    """Matmul FLOPs of one episode (``make_batch()``, loss, backward); leaves no gradient behind."""
    from xmeta.meta import meta_step_loss

    box = [0]
    with count_flops(box):
        with autocast(precision):
            loss, _ = meta_step_loss(model, model.meta_params(), make_batch(), cfg)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return box[0]


def model_flops(mode: str, model, episode, cache, precision: str) -> int | None:
    """FLOPs of the same computation on real tokens only, without recomputation."""
    import dataclasses

    from xmeta.meta import EpisodeTensors, tokenize_episode

    if mode == "batch_cache":
        return None  # mixed (frozen layers once per episode, top layers per pass): not reported
    cfg = dataclasses.replace(model.cfg, recompute_inner_steps=False)
    enc = model.encoder
    if mode.startswith("cached"):
        batch = tokenize_episode(enc, episode, cache_frozen=cache)
    else:  # the uncached computation runs every layer: the same layers, packed from the embeddings
        ref = tokenize_episode(enc, episode)
        batch = EpisodeTensors(enc.packed_inputs(ref.support), ref.support_labels, enc.packed_inputs(ref.query),
                               ref.query_labels, ref.n_way)  # fmt: skip
    return episode_flops(model, lambda: batch, precision, cfg)


def measure_higher(spec: dict) -> dict:
    from peer_higher import measure_higher as run  # eval/perf/peer_higher.py

    return run(spec)


def measure_latency(spec: dict) -> dict:
    from latency import measure_latency as run  # eval/perf/latency.py

    return run(spec)


def measure_icl(spec: dict) -> dict:
    from latency import measure_icl as run

    return run(spec)


KINDS = {"matmul": measure_matmul, "episode": measure_episode, "higher": measure_higher,
         "latency": measure_latency, "icl": measure_icl}  # fmt: skip


def run_child(spec: dict) -> dict:
    threads = int(spec["threads"])
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    t0 = time.perf_counter()
    out = KINDS[spec["kind"]](spec)
    out["wall_seconds"] = round(time.perf_counter() - t0, 2)
    out["threads"] = torch.get_num_threads()
    return out


if __name__ == "__main__":  # pragma: no cover - used through run.py
    import sys

    print(json.dumps(run_child(json.loads(sys.argv[1]))))
