"""eval/soup.py: a uniform average of meta-learned tensors, written in the first member's format."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))

import soup  # noqa: E402  (eval/soup.py)


def artifact(path: Path, value: float, name: str = "meta_params.safetensors", extra: str = "") -> Path:
    path.mkdir(parents=True)
    tensors = {"head.projection.weight": torch.full((2, 3), value), f"head.log_scale{extra}": torch.tensor([value])}
    save_file(tensors, str(path / name))
    if name == soup.PARAMS:
        (path / "xmeta_meta.json").write_text(json.dumps({"format": "x"}), encoding="utf-8")
        (path / "README.md").write_text("# card\n", encoding="utf-8")
    return path


def test_soup_is_the_mean_and_keeps_the_artifact_format(tmp_path) -> None:
    a = artifact(tmp_path / "a", 1.0)
    b = artifact(tmp_path / "b", 2.0, name=soup.CKPT_PARAMS)  # a resumable checkpoint as a member
    c = artifact(tmp_path / "c", 6.0)
    assert soup.main([str(tmp_path / "out"), str(a), str(b), str(c)]) == 0
    out = load_file(tmp_path / "out" / soup.PARAMS)
    assert torch.equal(out["head.projection.weight"], torch.full((2, 3), 3.0))
    assert torch.equal(out["head.log_scale"], torch.tensor([3.0]))
    meta = json.loads((tmp_path / "out" / "xmeta_meta.json").read_text(encoding="utf-8"))
    assert meta["soup"] == [str(a), str(b), str(c)]
    assert "Model soup" in (tmp_path / "out" / "README.md").read_text(encoding="utf-8")


def test_soup_refuses_members_of_another_layout(tmp_path) -> None:
    a = artifact(tmp_path / "a", 1.0)
    b = artifact(tmp_path / "b", 2.0, extra="_other")
    with pytest.raises(SystemExit, match="has other tensors than"):
        soup.main([str(tmp_path / "out"), str(a), str(b)])
    with pytest.raises(SystemExit, match="holds neither"):
        soup.main([str(tmp_path / "out"), str(a), str(tmp_path)])
