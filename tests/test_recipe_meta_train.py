"""The meta-training recipe end to end on a tiny model and corpus: CLI, 2 processes, resume, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_models import tiny_encoder, tiny_tokenizer

from xmeta.artifacts import MANIFEST, TrainingData, read_front_matter, read_manifest, verify
from xmeta.cli import main as xmeta_main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "meta_train.py"
TOPICS = {"sport": "ball goal team match", "health": "doctor pill fever clinic", "money": "bank price coin market"}
FILLER = "the a of and to in is it".split()


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-class corpus in three made-up languages and a tiny BERT saved to disk."""
    root = tmp_path_factory.mktemp("tiny")
    g = torch.Generator().manual_seed(0)
    words = set(FILLER)
    for lang in ("aaa_Latn", "bbb_Latn", "ccc_Latn"):
        for split, n in (("train", 12), ("dev", 8), ("test", 8)):
            rows = ["text\tlabel"]
            for label, kws in TOPICS.items():
                kw = [f"{w}{lang[:1]}" for w in kws.split()]  # language-specific keyword forms
                words.update(kw)
                for _ in range(n):
                    pick = torch.randint(0, len(kw), (2,), generator=g).tolist()
                    fill = torch.randint(0, len(FILLER), (3,), generator=g).tolist()
                    rows.append(" ".join([kw[pick[0]], *(FILLER[i] for i in fill), kw[pick[1]]]) + f"\t{label}")
            (root / "data" / lang).mkdir(parents=True, exist_ok=True)
            (root / "data" / lang / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    tok = tiny_tokenizer(sorted(words))
    model = tiny_encoder(len(tok), hidden=32, layers=2, heads=4, seed=0)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root / "data", root / "model"


def overrides(data: Path, model: Path, out: Path, **extra: object) -> list[str]:
    """recipes/configs/tiny.yaml with this test's paths and ``extra`` overrides."""
    base = {"output_dir": out, "encoder.model": model, "data.data_dir": data, **extra}
    return ["--config", str(ROOT / "recipes" / "configs" / "tiny.yaml"), *(f"{k}={v}" for k, v in base.items())]


def run_recipe(
    args: list[str], launcher: list[str] | None = None, env: dict[str, str] | None = None, **kw
) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable]) + [str(RECIPE)] + args
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, **kw)


def final_params(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip() / "params.safetensors")


def test_trains_end_to_end_through_the_cli(tiny_setup, tmp_path):
    data, model = tiny_setup
    out = tmp_path / "run"
    assert xmeta_main(["train", *overrides(data, model, out)]) == 0
    final = out / "final"
    files = json.loads((final / MANIFEST).read_text())["files"]
    assert set(files) == {
        "params.safetensors",
        "training_data.json",
        "README.md",
        "training.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/head.safetensors",
    }
    verify(read_manifest(final))
    assert (out / "config.yaml").is_file()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and '"val_acc"' in lines[2]
    card = (final / "README.md").read_text()
    assert "protomaml" in card and read_front_matter(card)["library_name"] == "peft"
    seconds = json.loads((final / "training.json").read_text())["train_seconds"]
    assert 0 < seconds < 600 and f"- wall time: {seconds / 60:.1f} min" in card
    # What it read is recorded: the train split of the training languages, validation episodes' rows.
    training = TrainingData.from_text((final / "training_data.json").read_text())
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert set(training.splits_by_lang) == set(cfg["data"]["train_langs"]) | set(cfg["data"]["val_langs"])
    assert all(uid.startswith("files:") for uid, _ in training.leakage_records())


def test_a_fresh_run_loads_in_plain_peft_with_xmeta_embeddings(tiny_setup, tmp_path):
    """peft's own loader reads every LoRA tensor of the export: same sentence embeddings as xmeta."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    from xmeta.meta import load_meta_model

    data, model_dir = tiny_setup
    out = tmp_path / "run"
    assert xmeta_main(["train", *overrides(data, model_dir, out)]) == 0
    meta = load_meta_model(out)
    assert any(bool(v.abs().sum()) for k, v in meta.meta_state_dict().items() if "lora_B" in k)  # trained adapters
    texts = ["ballc the goalc", "doctorc a pillc of feverc fever", "bankc"]
    want = meta.encoder.encode(texts)
    tok = AutoTokenizer.from_pretrained(model_dir)
    peft = PeftModel.from_pretrained(AutoModel.from_pretrained(model_dir), str(out / "final" / "adapter")).eval()
    batch = tok([meta.encoder.cfg.text_prefix + t for t in texts], padding=True, truncation=True,
                max_length=meta.encoder.cfg.max_length, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        h = peft(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    got = (h * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(got.to(want.dtype), want, rtol=1e-5, atol=1e-5)
    head = load_file(out / "final" / "adapter" / "head.safetensors")
    own = {k.removeprefix("head."): v for k, v in meta.meta_state_dict().items() if k.startswith("head.")}
    assert head.keys() == own.keys() and all(torch.equal(head[k], own[k]) for k in own)


def test_bad_config_is_refused_before_any_work(tiny_setup, tmp_path, capsys):
    data, model = tiny_setup
    out = tmp_path / "bad"
    assert xmeta_main(["train", *overrides(data, model, out, **{"meta.inner_lr": -1})]) == 2
    assert "inner_lr must be > 0" in capsys.readouterr().err and not out.exists()
    assert xmeta_main(["train", *overrides(data, model, out, **{"optim.outer_rl": 1})]) == 2
    assert "Did you mean 'optim.outer_lr'" in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_two_processes_equal_one(tiny_setup, tmp_path):
    data, model = tiny_setup
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = run_recipe(overrides(data, model, one, meta_batch_size=4))
    assert r1.returncode == 0, r1.stderr[-2000:]
    # Two real ranks on a CPU host: --multi_gpu with ACCELERATE_USE_CPU gives a gloo group of 2
    # (`--cpu` would start one process that trains alone and matches the one-process run trivially).
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    r2 = run_recipe(overrides(data, model, two, meta_batch_size=4), launcher=launcher,
                    env={"ACCELERATE_USE_CPU": "true", "GLOO_SOCKET_IFNAME": "lo"})  # fmt: skip
    assert r2.returncode == 0, r2.stderr[-3000:]
    config = yaml.safe_load((two / "config.yaml").read_text())
    assert config["meta_batch_size"] == 4
    assert "world: 2 processes (MULTI_CPU)" in r2.stderr, r2.stderr[-2000:]  # really two ranks
    p1, p2 = final_params(one), final_params(two)
    assert p1.keys() == p2.keys()
    for k in p1:
        torch.testing.assert_close(p1[k], p2[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_weights(tiny_setup, tmp_path):
    data, model = tiny_setup
    args = dict(max_steps=40, checkpoint_every=1, val_every=5)
    ref = tmp_path / "ref"
    assert run_recipe(overrides(data, model, ref, **args)).returncode == 0
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(RECIPE), *overrides(data, model, out, **args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-00000003").exists() and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = (out / "checkpoints" / "latest").read_text().strip()
    assert killed_at < "step-00000040", "the run finished before it could be interrupted"
    resumed = run_recipe([*overrides(data, model, out, **args), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    p_ref, p_res = final_params(ref), final_params(out)
    for k in p_ref:
        torch.testing.assert_close(p_res[k], p_ref[k], rtol=0, atol=0, msg=k)
    ref_lines = (ref / "metrics.jsonl").read_text().splitlines()
    res_lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [line.split('"episodes_per_s"')[0] for line in res_lines] == [
        line.split('"episodes_per_s"')[0] for line in ref_lines
    ]


def test_corrupt_checkpoint_is_refused_on_resume(tiny_setup, tmp_path, capsys):
    data, model = tiny_setup
    out = tmp_path / "run"
    args = overrides(data, model, out, max_steps=2, checkpoint_every=1, val_every=0)
    assert xmeta_main(["train", *args]) == 0
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    (latest / "params.safetensors").write_bytes(b"\0" * 10)
    assert xmeta_main(["train", "--resume", *args]) == 2
    assert "params.safetensors: 10 bytes, but" in capsys.readouterr().err


def test_runs_in_one_process_may_change_precision(tiny_setup, tmp_path):
    """accelerate's AcceleratorState is a process-wide singleton: a bf16 run followed by an fp32
    run in the same process (a notebook, the test suite) must not be refused."""
    data, model = tiny_setup
    for i, precision in enumerate(("bf16", "no")):
        args = overrides(data, model, tmp_path / f"run{i}", mixed_precision=f"'{precision}'", max_steps=1, val_every=0)
        assert xmeta_main(["train", *args]) == 0
        assert (
            json.loads((tmp_path / f"run{i}" / "final" / "training.json").read_text())["config"]["mixed_precision"]
            == precision
        )


def test_mamlpp_run_with_varying_ways_resumes_exactly_across_its_schedules(tiny_setup, tmp_path):
    """MAML++ (LSLR, multi-step loss, first order first) with 2-3-way episodes: resuming at step 3,
    inside the multi-step-loss window and after the switch to second order, ends with the same weights."""
    import shutil

    data, model = tiny_setup
    args = {"meta.algorithm": "maml", "meta.inner_steps": 2, "meta.learn_inner_lr": "true",
            "meta.inner_lr_shape": "tensor_step", "meta.multi_step_loss_steps": 5, "meta.first_order_until": 2,
            "data.n_way_min": 2, "max_steps": 6, "checkpoint_every": 3, "val_every": 3}  # fmt: skip
    ref = tmp_path / "ref"
    r = run_recipe(overrides(data, model, ref, **args))
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "resumed"
    shutil.copytree(ref, out)
    for stale in ("final", "checkpoints/step-00000006"):  # best/ is rewritten if step 6 beats it
        shutil.rmtree(out / stale)
    (out / "checkpoints" / "latest").write_text("step-00000003\n")
    r = run_recipe([*overrides(data, model, out, **args), "--resume"])
    assert r.returncode == 0, r.stderr[-2000:]
    p_ref, p_res = final_params(ref), final_params(out)
    lrs = [k for k in p_ref if k.startswith("inner_lrs.")]
    assert lrs and all(p_ref[k].shape == (2,) and not torch.allclose(p_ref[k], torch.tensor(0.1)) for k in lrs)
    for k in p_ref:
        torch.testing.assert_close(p_res[k], p_ref[k], rtol=0, atol=0, msg=k)


def test_a_prebuilt_activation_cache_is_stored_once_and_reused_with_equal_weights(tiny_setup, tmp_path, caplog):
    """``activation_cache_dir``: the first run fills the cache over every drawable example and stores
    it, the second loads the store untouched; both end with the weights of a run that fills the cache
    as episodes go (the tiled fill's values do not depend on the grouping)."""
    import logging

    from xmeta.data import EpisodeSampler, load_task

    data, model = tiny_setup
    store = tmp_path / "activation_caches"
    args = {"max_steps": 4, "val_every": 0, "checkpoint_every": 4}
    assert xmeta_main(["train", *overrides(data, model, tmp_path / "plain", **args)]) == 0
    with caplog.at_level(logging.INFO, logger="xmeta.meta.cache_store"):
        assert xmeta_main(["train", *overrides(data, model, tmp_path / "a", activation_cache_dir=store, **args)]) == 0
        (built,) = store.iterdir()
        manifest = built / "activation_cache.json"
        stamp = {p.name: p.stat().st_mtime_ns for p in built.iterdir()}
        assert "saved to" in caplog.text and "reusing" not in caplog.text
        caplog.clear()
        assert xmeta_main(["train", *overrides(data, model, tmp_path / "b", activation_cache_dir=store, **args)]) == 0
    assert f"reusing {built}" in caplog.text and "saved to" not in caplog.text
    assert list(store.iterdir()) == [built] and {p.name: p.stat().st_mtime_ns for p in built.iterdir()} == stamp
    # The store holds every example the training sampler can draw (the train split of the train languages).
    cfg = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    train = load_task("files", data_dir=data, langs=cfg["data"]["train_langs"], splits=["train"])
    sampler = EpisodeSampler.for_meta_training(train, n_way=3, k_shot=2, q_query=2, seed=0)
    drawable = {e.uid for e in sampler.pool_examples()}
    assert json.loads(manifest.read_text())["examples"] == len(drawable) == 2 * 3 * 12
    assert all(e.uid in drawable for ep in sampler.episodes(20) for e in (*ep.support, *ep.query))
    p_plain, p_a, p_b = (final_params(tmp_path / name) for name in ("plain", "a", "b"))
    assert p_plain.keys() == p_a.keys() == p_b.keys()
    for k in p_plain:
        assert torch.equal(p_a[k], p_plain[k]) and torch.equal(p_b[k], p_plain[k]), k
