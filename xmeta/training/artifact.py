"""The final artifact of a meta-training run: what ``xmeta adapt`` and the benchmark load.

``<run>/final/`` holds the meta-learned tensors and configs (``xmeta.meta.save_meta_model``
format), the LoRA adapters alone in peft's format (``adapter/``, for use outside xmeta), and a
model card with the data, languages, algorithm and validation accuracy.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from xmeta.config import to_dict
from xmeta.meta.checkpoint import WEIGHTS_FILE
from xmeta.training.config import TrainConfig


def peft_adapter(tensors: dict[str, Any], cfg: TrainConfig, out: Path) -> None:
    """Save the LoRA tensors under peft's names (``base_model.model.<module>.lora_A.weight``)."""
    lora = {
        "base_model.model." + k.replace(".default", ""): v
        for k, v in tensors.items()
        if ".lora_" in k and "default" in k
    }
    if not lora:
        return
    out.mkdir(parents=True, exist_ok=True)
    save_file(lora, out / "adapter_model.safetensors")
    enc = cfg.encoder
    layers = sorted({int(k.split(".layer.")[1].split(".")[0]) for k in lora if ".layer." in k})
    config = {
        "peft_type": "LORA",
        "base_model_name_or_path": enc.model,
        "r": enc.lora_r,
        "lora_alpha": enc.lora_alpha,
        "lora_dropout": enc.lora_dropout,
        "target_modules": list(enc.target_modules),
        "layers_to_transform": layers,
        "bias": "none",
        "task_type": "FEATURE_EXTRACTION",
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


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
- written: {time.strftime("%Y-%m-%d %H:%M:%S")}

Load it with `xmeta adapt --model <this dir>` or `xmeta bench --methods meta:<this dir>`.
"""


def write_artifact(best: Path, final: Path, cfg: TrainConfig, state: dict[str, Any]) -> Path:
    """Copy ``best`` to ``final`` with the peft adapter, the model card and the training summary."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best, tmp)
    peft_adapter(load_file(tmp / WEIGHTS_FILE), cfg, tmp / "adapter")
    (tmp / "README.md").write_text(model_card(cfg, state), encoding="utf-8")
    summary = {k: v for k, v in state.items() if k != "history"} | {"config": to_dict(cfg)}
    (tmp / "training.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final
