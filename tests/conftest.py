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
