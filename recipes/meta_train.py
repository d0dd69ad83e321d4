"""Meta-train a multilingual encoder (LoRA adapters + prototypical head) on high-resource languages.

Runs in any of these ways, with identical behaviour:

    python recipes/meta_train.py --config recipes/configs/protomaml.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 recipes/meta_train.py --config ... [key=value ...]
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 recipes/meta_train.py ...   # CPUs only
    xmeta train --config protomaml [key=value ...]

``--print-config`` prints the effective config (the file merged over its ``extends:`` bases, then
the overrides) as YAML and exits without training.

The recipe owns its loop. Each outer step draws ``meta_batch_size`` episodes with global indices
``step * B + j``; rank r takes the j with ``j % world == r``, so a 2-process run sees exactly the
episodes of a 1-process run. The model is never wrapped in DDP (no double backward there): each
rank backpropagates its episodes' losses / B and the gradients are summed with
``accelerator.reduce``, which makes every rank's update identical.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from xmeta.artifacts import TrainingData
from xmeta.config import ConfigError, dump_config, load_config, save_config, to_dict
from xmeta.data import EpisodeSampler, load_task
from xmeta.data.leakage import records
from xmeta.data.mixture import MixedSampler
from xmeta.data.schema import label_names_of
from xmeta.errors import XmetaError
from xmeta.meta import (
    ActivationCache,
    MetaLearner,
    MetaModel,
    activation_cache_for,
    encoder_config_for,
    meta_step_loss,
    prebuild_activation_cache,
    save_meta_model,
    tokenize_episode,
)
from xmeta.models.encoder import Encoder
from xmeta.recipes_index import config_path
from xmeta.training import checkpoint as ckpt
from xmeta.training.artifact import publish
from xmeta.training.config import TrainConfig
from xmeta.training.validation import ValidationScore, episode_accuracy, score, validation_episodes

logger = logging.getLogger("xmeta.recipes.meta_train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Meta-train LoRA adapters + a prototypical head on N-way K-shot episodes.",
        epilog="Example: python recipes/meta_train.py --config recipes/configs/protomaml.yaml max_steps=50 meta.inner_steps=3",
    )
    p.add_argument("--config", help="a config name (`xmeta recipes list`) or a YAML file of TrainConfig overrides")
    p.add_argument("--resume", action="store_true", help="continue from output_dir's latest checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the effective config as YAML and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="field overrides, e.g. optim.outer_lr=1e-3")
    return p.parse_args(argv)


def build_samplers(cfg: TrainConfig) -> tuple[EpisodeSampler | MixedSampler, list]:
    """The training sampler and the fixed validation episodes."""
    d = cfg.data
    train = load_task(d.task, data_dir=d.data_dir, langs=list(d.train_langs), splits=["train"])
    sampler = EpisodeSampler.for_meta_training(
        train,
        n_way=d.n_way,
        n_way_min=d.n_way_min,
        k_shot=d.k_shot,
        q_query=d.q_query,
        langs=list(d.train_langs),
        query_langs=list(d.train_langs) if d.cross_lingual else None,
        seed=cfg.seed,
    )
    if d.aux_task is not None:  # task diversity: another corpus' episodes mixed in
        aux = load_task(d.aux_task, data_dir=d.data_dir, langs=list(d.aux_langs), splits=["train"])
        n_aux = len(label_names_of(aux))
        aux_sampler = EpisodeSampler.for_meta_training(aux, n_way=min(d.n_way, n_aux), k_shot=d.k_shot,
                                                       q_query=d.q_query, langs=list(d.aux_langs), seed=cfg.seed)  # fmt: skip
        sampler = MixedSampler(sampler, aux_sampler, d.aux_fraction, seed=cfg.seed)
    val_episodes = []
    if d.val_langs and d.val_episodes and cfg.val_every:
        val_episodes = validation_episodes(d.task, d.val_langs, n_way=d.n_way, k_shot=d.k_shot, q_query=d.q_query,
                                           episodes_per_lang=d.val_episodes, seed=cfg.seed, data_dir=d.data_dir)  # fmt: skip
    return sampler, val_episodes


def validate(model: MetaModel, episodes: list, accelerator: Accelerator) -> ValidationScore:
    """The validation score on the fixed episodes (xmeta.training.validation), episodes split over ranks."""
    learner = MetaLearner(model)
    accuracies = torch.zeros(len(episodes), dtype=torch.float64, device=accelerator.device)
    for i in range(accelerator.process_index, len(episodes), accelerator.num_processes):
        accuracies[i] = episode_accuracy(learner, episodes[i])
    accuracies = accelerator.reduce(accuracies, reduction="sum")  # each episode scored by exactly one rank
    return score(episodes, accuracies.tolist())


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.optim.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.optim.warmup_steps, num_training_steps=cfg.max_steps)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = str(config_path(args.config)) if args.config else None  # a packaged name (protonet) or a path
    cfg = load_config(TrainConfig, config, args.overrides)  # bad values fail here, before any work
    if args.print_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    out = Path(cfg.output_dir)
    trackers = [t for t in cfg.trackers if t != "tensorboard" or _has_tensorboard()]
    # accelerate keeps the first Accelerator's settings as a process-wide singleton and refuses another
    # precision later: a second run in one process (a notebook, `xmeta train` twice, the tests) starts
    # from a clean AcceleratorState (the distributed PartialState is kept).
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, log_with=trackers or None, project_dir=str(out))
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")  # fmt: skip
    world, rank = accelerator.num_processes, accelerator.process_index
    logger.info("world: %d processes (%s) on %s", world, accelerator.distributed_type.value, accelerator.device)
    if accelerator.device.type == "cpu" and accelerator.num_processes > 1:
        # Several ranks on one host's cores: spinning OpenMP threads oversubscribe and crawl.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    if cfg.meta_batch_size % world:
        raise ConfigError(f"meta_batch_size={cfg.meta_batch_size} must be a multiple of the {world} processes")
    resume_from = ckpt.latest_checkpoint(out) if args.resume else None
    if args.resume and resume_from is None:
        raise XmetaError(f"--resume: no checkpoint in {out / 'checkpoints'}")
    if accelerator.is_main_process:
        if out.exists() and not args.resume and any(out.glob("checkpoints/step-*")):
            raise XmetaError(f"{out} already holds a run; pass --resume or choose another output_dir")
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    set_seed(cfg.seed)

    with accelerator.main_process_first():  # the first process fills the model and data caches
        sampler, val_episodes = build_samplers(cfg)
        # Eager attention when the meta-gradient is second order (fused kernels have no double backward).
        encoder = Encoder.from_config(encoder_config_for(cfg.encoder, cfg.meta))
    # What meta-training and validation read, stored with the model for the benchmark's leakage check.
    training = TrainingData.from_records(cfg.data.task, records(sampler, "train") + records(val_episodes, "train"))
    model = MetaModel(encoder, cfg.meta).to(accelerator.device)
    frozen_cache = activation_cache_for(encoder, cfg.activation_cache)  # frozen layers' output, once per example
    if cfg.activation_cache_dir is not None and isinstance(frozen_cache, ActivationCache):
        # Filled once over every drawable example and stored, or loaded where an earlier run on the same
        # encoder and data stored it; the tiled fill makes the values those of filling as episodes go.
        # The main process writes it; the others then load it. Under the episodes' autocast: the
        # values depend on the precision.
        with accelerator.main_process_first(), accelerator.autocast():
            frozen_cache = prebuild_activation_cache(encoder, sampler.pool_examples(), cfg.activation_cache_dir,
                                                     write=accelerator.is_main_process)  # fmt: skip
    params = model.meta_params()
    optimizer = torch.optim.AdamW(params.values(), lr=cfg.optim.outer_lr, weight_decay=cfg.optim.weight_decay)
    scheduler = make_scheduler(cfg, optimizer)
    state = {"step": 0, "best_val": -1.0, "best_step": -1, "bad_evals": 0, "nonfinite_total": 0, "history": [],
             "train_seconds": 0.0}  # fmt: skip
    if resume_from is not None:
        loaded = ckpt.load_checkpoint(resume_from)
        model.load_meta_state_dict(loaded["params"])
        optimizer.load_state_dict(loaded["optimizer"])
        scheduler.load_state_dict({**scheduler.state_dict(), **loaded["scheduler"]})
        ckpt.set_rng_state(*loaded["rng"])
        state = {"train_seconds": 0.0} | loaded["state"]  # checkpoints before wall times were kept: from 0
        logger.info("resumed from %s at step %d", resume_from, state["step"])
    metrics_path = out / "metrics.jsonl"
    if accelerator.is_main_process:
        _truncate_metrics(metrics_path, state["step"])  # drop lines logged after the checkpoint we resume from
        accelerator.init_trackers("xmeta", config=_flat(to_dict(cfg)))

    bar = tqdm(total=cfg.max_steps, initial=state["step"], disable=not accelerator.is_main_process, desc="meta-train")
    nonfinite_run, t0, eps_done = 0, time.perf_counter(), 0
    t_last = t0  # wall time (steps, validation, checkpoints) accumulates in state across resumes
    B = cfg.meta_batch_size
    while state["step"] < cfg.max_steps:
        step = state["step"]
        model.train()
        sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss, acc, non-finite count
        for j in range(rank, B, world):
            episode = sampler.episode(step * B + j)
            with accelerator.autocast():
                batch = tokenize_episode(encoder, episode, accelerator.device, cache_frozen=frozen_cache)
                loss, m = meta_step_loss(model, params, batch, step=step)
            if not torch.isfinite(loss):
                sums[2] += 1  # skipped: its gradient would poison the update
                continue
            (loss / B).backward()
            sums[0] += m["loss"].double()
            sums[1] += m["acc"].double()
        for p in params.values():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = accelerator.reduce([p.grad for p in params.values()], reduction="sum")
        for p, g in zip(params.values(), grads):
            p.grad = g
        sums = accelerator.reduce(sums, reduction="sum")
        n_bad = int(sums[2])
        state["nonfinite_total"] += n_bad
        nonfinite_run = nonfinite_run + n_bad if n_bad else 0
        if nonfinite_run >= cfg.max_nonfinite:
            raise XmetaError(f"{nonfinite_run} consecutive non-finite episode losses at step {step}; "
                             "lower optim.outer_lr / meta.inner_lr or use mixed_precision=no")  # fmt: skip
        grad_norm = torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.optim.grad_clip or float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] = step = step + 1
        eps_done += B
        n_ok = max(B - n_bad, 1)
        record = {"step": step, "loss": float(sums[0]) / n_ok, "acc": float(sums[1]) / n_ok,
                  "grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0], "nonfinite": n_bad,
                  "episodes_per_s": eps_done / (time.perf_counter() - t0)}  # fmt: skip

        if cfg.val_every and val_episodes and (step % cfg.val_every == 0 or step == cfg.max_steps):
            val = validate(model, val_episodes, accelerator)
            acc = val.accuracy
            record["val_acc"], record["val_ci"] = acc, list(val.ci)
            if acc > state["best_val"]:
                state.update(best_val=acc, best_step=step, bad_evals=0)
                if accelerator.is_main_process:
                    _save_best(model, out, cfg, state, training)
            else:
                state["bad_evals"] += 1
        if accelerator.is_main_process:
            if cfg.log_every and (step % cfg.log_every == 0 or "val_acc" in record):
                with open(metrics_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            bar.set_postfix(loss=f"{record['loss']:.3f}", val=f"{state['best_val']:.3f}",
                            eps=f"{record['episodes_per_s']:.2f}/s")  # fmt: skip
        bar.update(1)
        now = time.perf_counter()
        state["train_seconds"], t_last = state["train_seconds"] + (now - t_last), now
        stop = cfg.patience and state["bad_evals"] >= cfg.patience
        if accelerator.is_main_process and (
            (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.max_steps or stop
        ):
            ckpt.save_checkpoint(out, step, model.meta_state_dict(), optimizer.state_dict(), scheduler.state_dict(),
                                 state, keep=cfg.keep_checkpoints, encoder=to_dict(cfg.encoder),
                                 meta=to_dict(cfg.meta))  # fmt: skip
        if stop:
            logger.info("early stop at step %d: %d validations without improvement", step, state["bad_evals"])
            break
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if state["best_step"] < 0:  # no validation: the last step is the result
            _save_best(model, out, cfg, state, training)
        final = publish(out / "best", out / "final", cfg, state)
        logger.info("done: step %d, best val %.4f at step %d -> %s", state["step"], state["best_val"],
                    state["best_step"], final)  # fmt: skip
    accelerator.end_training()
    return 0


def _save_best(model: MetaModel, out: Path, cfg: TrainConfig, state: dict, training: TrainingData) -> None:
    """Write ``best/`` (atomically: the artifact writer never leaves it half-written)."""
    val = state["best_val"] if state["best_step"] >= 0 else None
    save_meta_model(model, out / "best", training=training, step=state["step"], val_acc=val)


def _truncate_metrics(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except XmetaError as err:
        sys.stderr.write(f"meta_train: error: {err}\n")
        sys.exit(2)
