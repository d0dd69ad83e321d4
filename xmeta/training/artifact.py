"""The final artifact of a meta-training run: what ``xmeta adapt`` and the benchmark load.

``<run>/final/`` is the run's best artifact (``xmeta.meta.save_meta_model``: tensors, the ids of
the data it read, peft's export in ``adapter/``) with a model card giving the data, languages,
algorithm, validation accuracy and wall time, and ``training.json`` (the run's config and final state).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from xmeta.artifacts import CARD, copy_writers, front_matter, open_artifact, write_artifact
from xmeta.artifacts.card import TASK_DATASETS
from xmeta.artifacts.training_data import training_data_of
from xmeta.config import to_dict
from xmeta.meta.checkpoint import usage
from xmeta.training.config import TrainConfig

SUMMARY = "training.json"


def _wall(state: dict[str, Any]) -> str:
    """The run's wall time: steps, validation and checkpoints, summed over resumes."""
    seconds = state.get("train_seconds")
    return "not recorded" if seconds is None else f"{seconds / 60:.1f} min (summed over resumes)"


def model_card(cfg: TrainConfig, state: dict[str, Any]) -> str:
    d, m = cfg.data, cfg.meta
    inner = (
        f"inner steps {m.inner_steps}, inner lr {m.inner_lr}, inner params {m.inner_params!r}; "
        if m.spec.inner_loop
        else ""
    )
    proj = f", projection {m.projection_dim}" if m.projection_dim else ""
    val = f"{state['best_val']:.4f} (step {state['best_step']})" if state.get("best_step", -1) >= 0 else "not run"
    return f"""# xmeta meta-trained adapter

- encoder: `{cfg.encoder.model}` ({cfg.encoder.pooling} pooling, prefix {cfg.encoder.text_prefix!r}), LoRA r={cfg.encoder.lora_r} on {", ".join(cfg.encoder.target_modules)}, layers {cfg.encoder.layers_to_transform or (f"top {cfg.encoder.lora_top_layers}" if cfg.encoder.lora_top_layers else "all")}
- algorithm: `{m.algorithm}` ({inner}head {m.effective_head}, distance {m.distance}{proj})
- data: `{d.task}`, {d.n_way}-way {d.k_shot}-shot {d.q_query}-query episodes
- meta-training languages ({len(d.train_langs)}, train split): {", ".join(d.train_langs)}
- meta-validation languages (dev split): {", ".join(d.val_langs) or "none"}
- steps: {state["step"]} x {cfg.meta_batch_size} episodes; outer lr {cfg.optim.outer_lr} ({cfg.optim.schedule})
- meta-validation accuracy (best): {val}
- wall time: {_wall(state)}
- written: {time.strftime("%Y-%m-%d %H:%M:%S")}

"""


def publish(best: Path, final: Path, cfg: TrainConfig, state: dict[str, Any]) -> Path:
    """Write ``final`` from the verified ``best`` artifact, with the run's model card and training summary."""
    source = open_artifact(best)
    manifest = dataclasses.replace(source, files={}, root=None, legacy=None, created="")
    training = training_data_of(source)
    langs = list(training.splits_by_lang) if training else []
    datasets = [TASK_DATASETS[cfg.data.task]] if cfg.data.task in TASK_DATASETS else []
    card = (
        front_matter(manifest, langs, datasets, "feature-extraction") + model_card(cfg, state) + "\n" + usage(manifest)
    )
    summary = {k: v for k, v in state.items() if k != "history"} | {"config": to_dict(cfg)}
    writers = copy_writers(source, skip=(CARD, SUMMARY))
    writers[CARD] = lambda p: p.write_text(card, encoding="utf-8")
    writers[SUMMARY] = lambda p: p.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return write_artifact(final, manifest, writers)
