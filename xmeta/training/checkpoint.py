"""Atomic, pickle-free checkpoints: tensors in safetensors, everything else in JSON.

A checkpoint is an xmeta artifact (kind "checkpoint", see ``xmeta.artifacts``) written by the one
atomic writer: a temporary directory renamed into place, then a ``latest`` pointer file replaced
atomically, so a crash (even SIGKILL) at any moment leaves the previous checkpoint loadable. Its
manifest of sha256 digests, written last, lets a truncated or corrupted checkpoint be refused with
an error that names the file.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from xmeta.artifacts import (
    MANIFEST,
    PARAMS,
    ArtifactError,
    Manifest,
    file_digest,
    read_manifest,
    verify,
    write_artifact,
)
from xmeta.errors import InputError, writing

LEGACY_MANIFEST = "manifest.json"  # checkpoints written before xmeta/2
LATEST = "latest"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=_json_default), encoding="utf-8")


def optimizer_to_files(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into a flat tensor dict and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Torch (CPU and CUDA), numpy and Python RNG states, split into tensors and JSON."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    v, state, gauss = meta["python"]
    random.setstate((v, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    params: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    scheduler: dict[str, Any],
    state: dict[str, Any],
    keep: int = 2,
    *,
    encoder: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``<run_dir>/checkpoints/step-<step>`` atomically and point ``latest`` at it.

    It is an xmeta artifact of kind "checkpoint" (``xmeta.artifacts``: digests of every file,
    written last); with the run's ``encoder`` and ``meta`` configs it also loads as a meta model
    (``xmeta adapt --model <run>/checkpoints/step-N``, ``eval/soup.py``).
    """
    root = Path(run_dir) / "checkpoints"
    opt_tensors, opt_meta = optimizer_to_files(optimizer)
    rng_tensors, rng_meta = rng_state()
    tensors = {k: v.detach().contiguous().cpu() for k, v in params.items()}
    writers = {
        PARAMS: lambda p: save_file(tensors, p),
        "optimizer.safetensors": lambda p: save_file(opt_tensors, p),
        "optimizer.json": lambda p: _write_json(p, opt_meta),
        "rng.safetensors": lambda p: save_file(rng_tensors, p),
        "rng.json": lambda p: _write_json(p, rng_meta),
        "scheduler.json": lambda p: _write_json(p, {k: v for k, v in scheduler.items() if k != "lr_lambdas"}),
        "state.json": lambda p: _write_json(p, {**state, "step": step}),
    }
    manifest = Manifest("checkpoint", dict(encoder or {}), dict(meta or {}), step=step)
    final = write_artifact(root / f"step-{step:08d}", manifest, writers)
    with writing(root / LATEST, atomic=True) as pointer:
        pointer.write_text(final.name, encoding="utf-8")
    if keep > 0:
        for old in sorted(root.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    return pointer.parent / pointer.read_text(encoding="utf-8").strip()


def verify_checkpoint(ckpt: Path) -> None:
    """Refuse a missing, truncated or altered checkpoint with an InputError naming the file."""
    if (ckpt / LEGACY_MANIFEST).is_file() and not (ckpt / MANIFEST).is_file():
        return _verify_legacy(ckpt)
    try:
        manifest = read_manifest(ckpt)
    except ArtifactError as err:
        raise InputError(f"checkpoint {ckpt} is incomplete or corrupt: {err}") from None
    verify(manifest)


def _verify_legacy(ckpt: Path) -> None:
    """A checkpoint written before xmeta/2 (``manifest.json``: name -> sha256)."""
    files = json.loads((ckpt / LEGACY_MANIFEST).read_text(encoding="utf-8"))
    for name, digest in files.items():
        path = ckpt / name
        if not path.is_file():
            raise InputError(f"checkpoint {ckpt} is incomplete: {name} is missing")
        if file_digest(path) != digest:
            raise InputError(f"checkpoint {ckpt} is corrupt: {path} does not match its sha256 in {LEGACY_MANIFEST}")


def load_checkpoint(ckpt: str | Path) -> dict[str, Any]:
    """Verify and read a checkpoint; RNG states are returned, not applied (see ``set_rng_state``)."""
    ckpt = Path(ckpt)
    verify_checkpoint(ckpt)
    read = lambda name: json.loads((ckpt / name).read_text(encoding="utf-8"))  # noqa: E731
    return {
        "params": load_file(ckpt / PARAMS),
        "optimizer": optimizer_from_files(load_file(ckpt / "optimizer.safetensors"), read("optimizer.json")),
        "scheduler": read("scheduler.json"),
        "rng": (load_file(ckpt / "rng.safetensors"), read("rng.json")),
        "state": read("state.json"),
    }
