"""Shared fixtures: the real data directory (XMETA_DATA_DIR, default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("XMETA_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not path.is_absolute():
        path = (ROOT / path).resolve()
    if not (path / "sib200").is_dir():
        pytest.fail(f"real data not found at {path}; set XMETA_DATA_DIR")
    return path


@pytest.fixture(autouse=True)
def _threads(request):
    """One intra-op thread for tiny-model tests: on a busy 2-core machine, OpenMP's spinning
    threads make a 32x32 matmul ~1000x slower; real-model (slow) tests keep the default."""
    import torch

    default = torch.get_num_threads()
    if request.node.get_closest_marker("slow") is None:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(default)
