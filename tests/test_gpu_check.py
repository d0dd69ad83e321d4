"""eval/gpu: the bundle prepare.py writes, and check.py end to end on a CPU (--device cpu --tiny).

The GPU run itself happens on a lent machine (eval/gpu/README.md); this keeps the script from
rotting: the same code paths, shrunk architectures, real tokenizers and SIB-200 sentences.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "eval" / "gpu"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"eval_gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def check():
    return _load("check")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("gpu") / "bundle"
    _load("prepare").prepare(out, data_dir, n_train=6, n_eval=3)
    return out


@pytest.mark.slow
def test_bundle_holds_configs_tokenizers_data_and_episodes_within_the_size_limit(bundle):
    record = json.loads((bundle / "bundle.json").read_text())
    assert record["total_mb"] < 40  # the working tree travels in 64 MiB
    for model in ("multilingual-e5-small", "gemma-3-270m"):
        names = {p.name for p in (bundle / "models" / model).iterdir()}
        assert {"config.json", "tokenizer_config.json", "tokenizer.json.gz"} <= names
        assert not any(n.endswith((".safetensors", ".bin", ".gguf")) for n in names)  # never weights
    episodes = json.loads((bundle / "episodes.json").read_text())
    assert len(episodes["meta_train"]["episodes"]) == 6
    first = episodes["meta_train"]["episodes"][0]
    assert first["lang"] in record["train_langs"] and len(first["support"]) == 7 * 5 and first["support"][0]["text"]
    for lang in record["eval_langs"]:
        assert (bundle / "data" / "sib200" / "annotated" / lang / "test.tsv").is_file()
    for name, entry in record["files"].items():  # what it lists is what is there
        assert (bundle / name).stat().st_size == entry["bytes"]


@pytest.mark.slow
def test_check_runs_end_to_end_on_cpu_and_reports_every_figure(bundle, tmp_path, check):
    from parts import FIGURES, PARTS  # eval/gpu/parts.py (on sys.path once check.py is loaded)

    out = tmp_path / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        sys.executable,
        str(GPU / "check.py"),
        "--device",
        "cpu",
        "--tiny",
        "--bundle",
        str(bundle),
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["complete"] is True
    assert report["device"]["type"] == "cpu" and report["versions"]["torch"] and report["versions"]["transformers"]
    assert set(report["parts"]) == {"setup", *PARTS}
    for name, rec in report["parts"].items():
        assert rec["status"] == "ok", (name, rec.get("error"))
        assert rec["wall_s"] > 0
    want = {f"{part}.{key}" for part, keys in FIGURES.items() for key in keys}
    assert set(report["figures"]) == want
    for key, value in report["figures"].items():
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)
    parts = report["parts"]
    assert parts["maml"]["second_order"] and parts["maml"]["attn_implementation"] == "eager"
    assert not parts["fomaml"]["second_order"] and parts["protonet"]["algorithm"] == "protonet"
    assert all(math.isfinite(parts[p]["first_loss"]) for p in ("protonet", "fomaml", "maml"))
    assert parts["icl"]["prefix_tokens"] > 0 and parts["icl"]["queries_per_episode"] == 7
    assert report["wall_s"] >= sum(rec["wall_s"] for rec in parts.values())


def test_a_part_past_its_budget_is_stopped_and_keeps_what_it_measured(check, tmp_path):
    def slow(until: float) -> None:
        rec["s_per_episode"] = 0.5  # a figure from a finished step
        time.sleep(30)

    rec: dict = {}
    start = time.perf_counter()
    check.run_part("slow", slow, 1.5, rec)
    assert rec["status"] == "timeout" and rec["s_per_episode"] == 0.5
    assert 1.4 < rec["wall_s"] < 10 and time.perf_counter() - start < 10
    report = {"parts": {"setup": {"status": "ok", "wall_s": 1.0}, "protonet": rec}}
    check.write_report(tmp_path / "r.json", report)
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["figures"] == {"protonet.s_per_episode": 0.5}  # the missing peak memory is absent, not 0


def test_a_failing_part_is_recorded_and_no_time_left_skips(check):
    rec: dict = {}
    check.run_part("bad", lambda until: 1 / 0, 10, rec)
    assert rec["status"] == "error" and "ZeroDivisionError" in rec["error"]
    rec = {}
    check.run_part("late", lambda until: None, 0.5, rec)
    assert rec["status"] == "skipped"


def test_timed_loop_stops_before_a_step_that_would_pass_the_deadline():
    from parts import timed_loop

    def step(i: int) -> float:
        start = time.perf_counter()
        time.sleep(0 if i == 0 else 0.2)
        return time.perf_counter() - start

    rec: dict = {}
    timed_loop(rec, time.perf_counter() + 0.45, step, 10, per_step=4)
    # warm-up untimed; after one 0.2 s step, 1.5 x 0.2 s more would pass the deadline.
    assert rec["steps_timed"] == 1 and rec["stopped_early"] == "deadline"
    assert rec["warmup_s"] < 0.1 and rec["s_per_episode"] == pytest.approx(rec["step_seconds"][0] / 4, rel=1e-3)
    assert rec["episodes_per_s"] == pytest.approx(1 / rec["s_per_episode"])


def test_unknown_part_is_refused(check, capsys):
    with pytest.raises(SystemExit):
        check.parse_args(["--device", "cpu", "--parts", "protonet,mamal"])
    assert "unknown part(s) ['mamal']" in capsys.readouterr().err
