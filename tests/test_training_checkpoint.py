"""Checkpoints: round trip (params, optimizer, RNG), atomic latest pointer, corruption refused."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from xmeta.errors import InputError
from xmeta.training import checkpoint as ck


def _setup():
    torch.manual_seed(0)
    params = {"a": torch.randn(3, 2, requires_grad=True), "b": torch.randn(4, requires_grad=True)}
    opt = torch.optim.AdamW(params.values(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    for _ in range(3):
        opt.zero_grad()
        sum((p**2).sum() for p in params.values()).backward()
        opt.step()
        sched.step()
    return params, opt, sched


def test_round_trip_restores_everything(tmp_path):
    params, opt, sched = _setup()
    random.seed(5)
    np.random.seed(5)
    ck.save_checkpoint(tmp_path, 3, params, opt.state_dict(), sched.state_dict(), {"best": 0.5})
    expected = (torch.rand(3), random.random(), np.random.rand())
    loaded = ck.load_checkpoint(ck.latest_checkpoint(tmp_path))
    ck.set_rng_state(*loaded["rng"])
    assert (torch.rand(3).tolist(), random.random(), np.random.rand()) == (expected[0].tolist(), *expected[1:])
    for k, v in params.items():
        assert torch.equal(loaded["params"][k], v.detach())
    params2 = {k: v.clone().requires_grad_(True) for k, v in loaded["params"].items()}
    opt2 = torch.optim.AdamW(params2.values(), lr=1e-2)
    opt2.load_state_dict(loaded["optimizer"])
    for s1, s2 in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()):
        for key in s1:
            assert torch.equal(torch.as_tensor(s1[key]), torch.as_tensor(s2[key]))
    assert loaded["state"] == {"best": 0.5, "step": 3}
    assert loaded["scheduler"]["last_epoch"] == sched.state_dict()["last_epoch"]


def test_latest_pointer_and_rotation(tmp_path):
    params, opt, sched = _setup()
    for step in (1, 2, 3):
        ck.save_checkpoint(tmp_path, step, params, opt.state_dict(), sched.state_dict(), {}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert names == ["step-00000002", "step-00000003"]
    assert ck.latest_checkpoint(tmp_path).name == "step-00000003"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corrupt_checkpoint_is_refused(tmp_path, damage):
    params, opt, sched = _setup()
    path = ck.save_checkpoint(tmp_path, 1, params, opt.state_dict(), sched.state_dict(), {})
    target = path / ("params.safetensors" if damage != "manifest" else ck.MANIFEST)
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:20])
        match = r"params\.safetensors: 20 bytes, but .* says \d+: the file is truncated"
    elif damage == "flip":  # same size, different bytes: only the digest can tell
        data = bytearray(target.read_bytes())
        data[-4:] = b"\x7f\x7f\x7f\x7f"
        target.write_bytes(bytes(data))
        match = r"params\.safetensors: does not match its sha256"
    elif damage == "delete":
        target.unlink()
        match = r"params\.safetensors: missing"
    else:
        target.write_text("{not json")
        match = "incomplete or corrupt: .*xmeta.json: cannot read the manifest"
    with pytest.raises(InputError, match=match):
        ck.load_checkpoint(path)
