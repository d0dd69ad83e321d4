"""One performance measurement, run in its own process by ``eval/perf/run.py`` (``--child SPEC``).

Kinds: ``matmul`` (dense GEMM throughput), ``episode`` (one meta-training episode: seconds,
FLOPs, peak memory), ``higher`` (the same second-order episode with the ``higher`` library),
``latency`` (adapting a meta-learned encoder to a 7x5 support set, then per-query prediction),
``icl`` (the in-context baseline's per-query latency), ``predict`` / ``plain_hf`` (sentences/s of
``xmeta predict`` and of a plain transformers loop, ``predict_speed.py``), ``icl_flops`` (model
FLOPs per query of the encoder and the ICL LLM) and ``cache_fill`` (activation-cache fill one
example at a time against fixed-shape tiles, ``cache_fill.py``). Each prints one JSON line.

Memory: ``peak_rss_mb`` is ``ru_maxrss`` of this process (model loading included);
``episode_peak_rss_mb`` is the high-water mark reset after loading and cache filling (Linux
``/proc/self/clear_refs``), i.e. the peak while episodes run, model resident.

The helpers shared with the other scripts live in ``common.py``: this file runs as ``__main__``,
and a module importing it back would load it a second time.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from typing import Any

import torch
from common import (  # eval/perf/common.py
    autocast,
    build_model,
    build_setting,
    count_flops,
    load_episodes,
    reset_peak,
    rss_peak_mb,
    status_mb,
    token_counts,
)

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
    peak, episode_peak = rss_peak_mb(), status_mb("VmHWM")
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


def measure_predict(spec: dict) -> dict:
    from predict_speed import measure_predict as run  # eval/perf/predict_speed.py

    return run(spec)


def measure_plain_hf(spec: dict) -> dict:
    from predict_speed import measure_plain_hf as run

    return run(spec)


def measure_icl_flops(spec: dict) -> dict:
    from predict_speed import measure_query_flops as run

    return run(spec)


def measure_cache_fill(spec: dict) -> dict:
    """The config's ``cache_fill:`` settings (and the seed) as ``cache_fill.measure_cache_fill``'s
    keyword arguments: a misspelt setting fails (TypeError naming it) instead of being dropped."""
    from cache_fill import measure_cache_fill as run  # eval/perf/cache_fill.py

    return run(**{k: v for k, v in spec.items() if k not in ("name", "kind", "threads")})


KINDS = {"matmul": measure_matmul, "episode": measure_episode, "higher": measure_higher,
         "latency": measure_latency, "icl": measure_icl, "predict": measure_predict, "plain_hf": measure_plain_hf,
         "icl_flops": measure_icl_flops, "cache_fill": measure_cache_fill}  # fmt: skip


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
