"""eval/soup.py: a uniform average of meta-learned tensors, written as a verified meta artifact."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from adapt_fixtures import encoder_config, write_encoder
from safetensors.torch import load_file

from xmeta.artifacts import MANIFEST, PARAMS, TrainingData
from xmeta.meta import MetaConfig, MetaModel, save_meta_model
from xmeta.models.encoder import Encoder
from xmeta.training.checkpoint import save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))

import soup  # noqa: E402  (eval/soup.py)


@pytest.fixture(scope="module")
def enc_dir(tmp_path_factory) -> Path:
    return write_encoder(tmp_path_factory.mktemp("enc"))


def member(model_dir: Path, value: float, projection_dim: int = 4) -> MetaModel:
    model = MetaModel(Encoder.from_config(encoder_config(model_dir)), MetaConfig(projection_dim=projection_dim))
    with torch.no_grad():
        model.head.projection.weight.fill_(value)
    return model


def test_soup_is_the_mean_and_a_verified_artifact(tmp_path, enc_dir) -> None:
    training = TrainingData("files", {"aaa_Latn": ("train",)})
    a = save_meta_model(member(enc_dir, 1.0), tmp_path / "a", training=training, step=3)
    m = member(enc_dir, 2.0)
    opt = torch.optim.SGD(m.meta_params().values(), lr=0.1)
    b = save_checkpoint(tmp_path / "run", 5, m.meta_state_dict(), opt.state_dict(), {}, {})  # a checkpoint member
    c = save_meta_model(member(enc_dir, 6.0), tmp_path / "c")
    assert soup.main([str(tmp_path / "out"), str(a), str(b), str(c)]) == 0
    out = load_file(tmp_path / "out" / PARAMS)
    assert torch.equal(out["head.projection.weight"], torch.full((4, 32), 3.0))
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["info"]["soup"] == [str(a), str(b), str(c)]
    assert manifest["training"]["task"] == "files" and manifest["step"] == 3
    assert "Model soup" in (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    peft = load_file(tmp_path / "out" / "adapter" / "adapter_model.safetensors")  # the export holds the soup too
    assert set(peft) == {k for k in out if ".lora_" in k} or all(k.startswith("base_model.model.") for k in peft)


def test_soup_refuses_other_layouts_and_corrupt_members(tmp_path, enc_dir) -> None:
    a = save_meta_model(member(enc_dir, 1.0), tmp_path / "a")
    b = save_meta_model(member(enc_dir, 2.0, projection_dim=6), tmp_path / "b")
    with pytest.raises(SystemExit, match="has shape"):
        soup.main([str(tmp_path / "out"), str(a), str(b)])
    with pytest.raises(SystemExit, match="not a meta-trained model"):
        soup.main([str(tmp_path / "out"), str(a), str(tmp_path / "a" / "adapter")])
    data = bytearray((a / PARAMS).read_bytes())
    data[-8:] = b"\xff" * 8
    (a / PARAMS).write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="does not match its sha256"):
        soup.main([str(tmp_path / "out"), str(a)])
