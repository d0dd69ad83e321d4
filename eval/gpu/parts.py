"""The measurements of ``eval/gpu/check.py``, each through xmeta's own code path.

- ``meta_train``: the loop of ``recipes/meta_train.py`` (one process) on a shipped config
  (protonet, fomaml, maml), bf16 autocast, over the bundle's episodes: seconds per episode and
  peak memory. The run-long activation cache is filled first with every example the timed steps
  read (the steady state of a run, as ``eval/perf/measure.py``'s ``cached`` mode).
- ``predict``: ``xmeta adapt``'s adaptation (``xmeta.adaptation.adapt`` on a dev TSV) and ``xmeta
  predict``'s loop (``read_texts`` + ``write_predictions``) on real SIB-200 test sentences.
- ``icl``: the ``icl:`` method's learner (``ICLLearner``: one prefix KV cache per episode, then
  every query and label on top of it) on the benchmark's evaluation episodes.

Each function fills its record ``rec`` as it goes, so a part stopped by its deadline
(``check.PartTimeout``) still leaves the figures of the steps it finished. ``until`` is the
``time.perf_counter()`` value after which no further timed step is started.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xmeta.interfaces import Episode, Example


@dataclass
class Context:
    """What every part reads: device, the materialised random-weight models and the bundle's data."""

    device: torch.device
    tiny: bool
    bundle: Path
    encoder_dir: Path
    lm_dir: Path
    train_episodes: list[Episode]
    eval_episodes: dict[str, list[Episode]]
    steps: int  # timed outer steps per meta-training part (fewer if the deadline comes first)
    overrides: list[str] = field(default_factory=list)  # TrainConfig overrides every part applies


def episode_from_dict(d: dict[str, Any]) -> Episode:
    """An ``Episode`` from ``dataclasses.asdict`` output (``prepare.py`` writes the bundle's episodes so)."""
    examples = {k: tuple(Example(**e) for e in d[k]) for k in ("support", "query")}
    return Episode(d["index"], d["lang"], d["query_lang"], tuple(d["label_names"]), seed=d.get("seed", 0), **examples)


def sync(device: torch.device) -> None:
    """Wait for queued kernels: CUDA runs asynchronously, so a timer must stop after them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        from common import reset_peak  # eval/perf/common.py

        reset_peak()


def peak_memory(device: torch.device) -> tuple[float, str]:
    """(peak MiB since ``reset_peak_memory``, what was measured)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    from common import status_mb  # eval/perf/common.py

    return float(status_mb("VmHWM") or 0.0), "VmHWM (process RSS high-water mark)"


def train_config(ctx: Context, name: str, extra: Sequence[str] = ()):
    """The shipped config ``name`` with the random-weight encoder and bf16 autocast."""
    from xmeta.config import load_config
    from xmeta.recipes_index import config_path
    from xmeta.training.config import TrainConfig

    overrides = [f"encoder.model={ctx.encoder_dir}", "mixed_precision=bf16", *ctx.overrides, *extra]
    return load_config(TrainConfig, str(config_path(name)), overrides)


def timed_loop(rec: dict, until: float, run: Callable[[int], float], n: int, per_step: int = 1) -> None:
    """Run ``run(i)`` (seconds of step ``i``) for ``i = 1..n``, step 0 untimed, updating ``rec``.

    Stops before a step that would end after ``until`` (judged by the slowest step so far).
    ``per_step``: episodes per step (``s_per_episode`` = median step time / ``per_step``).
    """
    rec["warmup_s"] = round(run(0), 4)  # one-off costs (kernel selection, allocator growth)
    times: list[float] = []
    for i in range(1, n + 1):
        if times and time.perf_counter() + 1.5 * max(times) > until:
            rec["stopped_early"] = "deadline"
            break
        times.append(run(i))
        med = statistics.median(times)
        rec.update(steps_timed=len(times), step_seconds=[round(t, 4) for t in times],
                   s_per_episode=med / per_step, episodes_per_s=per_step / med)  # fmt: skip


# ---- meta-training ----------------------------------------------------------------------------


def meta_train(ctx: Context, rec: dict, until: float, config: str) -> None:
    """Outer steps of ``recipes/meta_train.py``'s loop on config ``config``; see the module docstring."""
    from xmeta.meta import (
        ActivationCache,
        MetaModel,
        activation_cache_for,
        encoder_config_for,
        inference_precision,
        meta_step_loss,
        tokenize_episode,
    )
    from xmeta.models.encoder import Encoder

    cfg = train_config(ctx, config, ["meta_batch_size=1"] if ctx.tiny else [])
    dev = ctx.device
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    encoder = Encoder.from_config(encoder_config_for(cfg.encoder, cfg.meta))  # eager attention if second order
    model = MetaModel(encoder, cfg.meta).to(dev)
    frozen = activation_cache_for(encoder, cfg.activation_cache)
    params = model.meta_params()
    opt = torch.optim.AdamW(params.values(), lr=cfg.optim.outer_lr, weight_decay=cfg.optim.weight_decay)
    B, eps = cfg.meta_batch_size, ctx.train_episodes
    rec.update(config=config, algorithm=cfg.meta.algorithm, second_order=cfg.meta.second_order,
               attn_implementation=encoder.attn_implementation, meta_batch_size=B, precision="bf16",
               load_s=round(time.perf_counter() - t0, 3))  # fmt: skip
    # Steps beyond the bundle's episodes revisit them (same shapes, cache hits: still the steady state).
    used = [eps[i % len(eps)] for i in range((ctx.steps + 1) * B)]
    if isinstance(frozen, ActivationCache):  # steady state: every example seen before
        with inference_precision("bf16", dev):
            frozen.fill([e for ep in used for e in (*ep.support, *ep.query)])
        rec["cache"] = frozen.stats()
    reset_peak_memory(dev)
    model.train()
    losses: list[float] = []

    def step(i: int) -> float:
        sync(dev)
        start = time.perf_counter()
        for j in range(B):
            with inference_precision("bf16", dev):  # what accelerator.autocast() is under mixed_precision=bf16
                batch = tokenize_episode(encoder, used[i * B + j], dev, cache_frozen=frozen)
                loss, _ = meta_step_loss(model, params, batch, step=i)
            if not torch.isfinite(loss):  # the recipe's check (and its sync point)
                raise FloatingPointError(f"{config}: non-finite episode loss at step {i}")
            (loss / B).backward()
            losses.append(float(loss.detach()))
        torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.optim.grad_clip or float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(dev)
        rec["peak_mem_mib"], rec["mem_source"] = peak_memory(dev)
        rec["first_loss"] = losses[0]
        return time.perf_counter() - start

    timed_loop(rec, until, step, ctx.steps, per_step=B)
    from common import token_counts  # eval/perf/common.py

    rec["real_tokens_per_episode"] = statistics.mean(token_counts(encoder, ep)[0] for ep in used)


# ---- xmeta adapt / xmeta predict ----------------------------------------------------------------


def predict(ctx: Context, rec: dict, until: float, runs: Sequence[tuple[str, int]], n_texts: int,
            min_seconds: float) -> None:  # fmt: skip
    """Sentences/s of ``xmeta predict``'s loop for each ``(precision, batch size)`` in ``runs``."""
    from xmeta.adaptation import adapt
    from xmeta.adaptation.texts import read_texts
    from xmeta.commands.predict import write_predictions
    from xmeta.meta import MetaModel
    from xmeta.models.encoder import Encoder

    cfg = train_config(ctx, "protonet_hr50_xl")  # the shipped `meta:default`'s settings
    lang = sorted(ctx.eval_episodes)[0]
    root = ctx.bundle / "data" / "sib200" / "annotated" / lang
    t0 = time.perf_counter()
    model = MetaModel(Encoder.from_config(cfg.encoder), cfg.meta).to(ctx.device)
    texts = read_texts(root / "test.tsv", text_column="text")  # real SIB-200 sentences, as `--input test.tsv`
    texts = (texts * (n_texts // len(texts) + 1))[:n_texts]
    rec.update(lang=lang, texts=len(texts), load_s=round(time.perf_counter() - t0, 3), runs=[])
    sink = io.StringIO()
    reset_peak_memory(ctx.device)
    for precision, batch_size in runs:
        predictor = adapt(root / "dev.tsv", model, lang=lang, label_column="category", batch_size=batch_size,
                          precision=precision)  # fmt: skip
        run = {"precision": precision, "batch_size": batch_size}
        rec["runs"].append(run)
        write_predictions(predictor, texts[: batch_size * 8], sink, batch_size)  # warm-up: one chunk
        sync(ctx.device)
        done, start = 0, time.perf_counter()
        while True:
            sink.seek(0)
            sink.truncate()
            write_predictions(predictor, texts, sink, batch_size)
            sync(ctx.device)
            done += len(texts)
            elapsed = time.perf_counter() - start
            run.update(sentences=done, seconds=round(elapsed, 4), sentences_per_s=done / elapsed)
            if elapsed >= min_seconds or time.perf_counter() + elapsed / done * len(texts) > until:
                break
    rec["sentences_per_s"] = rec["runs"][0]["sentences_per_s"]
    rec["peak_mem_mib"], rec["mem_source"] = peak_memory(ctx.device)


# ---- in-context learning ----------------------------------------------------------------------


def icl(ctx: Context, rec: dict, until: float, dtype: str, max_queries: int | None) -> None:
    """Seconds per episode of the ``icl:`` learner (adapt = build the prompt, predict = score the queries)."""
    from xmeta.icl import ICLLearner

    t0 = time.perf_counter()
    learner = ICLLearner(str(ctx.lm_dir), template="topic", dtype=dtype, device=str(ctx.device))
    learner.load()
    lang = sorted(ctx.eval_episodes)[0]
    episodes = ctx.eval_episodes[lang]
    rec.update(lang=lang, dtype=dtype, batch_size=learner.config.batch_size, load_s=round(time.perf_counter() - t0, 3))
    reset_peak_memory(ctx.device)

    def episode(i: int) -> float:
        ep = episodes[i % len(episodes)]
        queries = [q.text for q in ep.query][:max_queries]
        sync(ctx.device)
        start = time.perf_counter()
        predictor = learner.adapt(list(ep.support), seed=ep.index)
        predictor.predict(queries)
        sync(ctx.device)
        seconds = time.perf_counter() - start
        rec.update(queries_per_episode=len(queries), prefix_tokens=predictor.prefix_tokens,
                   demonstrations=predictor.n_demonstrations_used)  # fmt: skip
        rec["peak_mem_mib"], rec["mem_source"] = peak_memory(ctx.device)
        return seconds

    timed_loop(rec, until, episode, min(len(episodes) - 1, ctx.steps))


PARTS: dict[str, Callable[..., None]] = {
    "protonet": lambda ctx, rec, until, opts: meta_train(ctx, rec, until, "protonet"),
    "fomaml": lambda ctx, rec, until, opts: meta_train(ctx, rec, until, "fomaml"),
    "maml": lambda ctx, rec, until, opts: meta_train(ctx, rec, until, "maml"),
    "predict": lambda ctx, rec, until, opts: predict(
        ctx, rec, until, opts["predict_runs"], opts["predict_texts"], opts["predict_seconds"]
    ),
    "icl": lambda ctx, rec, until, opts: icl(ctx, rec, until, opts["icl_dtype"], opts["icl_queries"]),
}
# The figures each part must leave (check.py copies them to the JSON's flat "figures").
FIGURES: dict[str, tuple[str, ...]] = {
    "protonet": ("s_per_episode", "peak_mem_mib"),
    "fomaml": ("s_per_episode", "peak_mem_mib"),
    "maml": ("s_per_episode", "peak_mem_mib"),
    "predict": ("sentences_per_s", "peak_mem_mib"),
    "icl": ("s_per_episode", "peak_mem_mib"),
}
