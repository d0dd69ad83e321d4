"""adapt -> save -> load -> predict on a tiny model, through the API and the CLI; artifact errors."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from adapt_fixtures import write_corpus, write_encoder, write_meta_checkpoint
from safetensors.torch import load_file, save_file

import xmeta
from xmeta.artifacts import MANIFEST, PARAMS
from xmeta.artifacts import store as artifact_store
from xmeta.artifacts.manifest import describe_files
from xmeta.cli import main as xmeta_main
from xmeta.errors import InputError
from xmeta.interfaces import Predictor

ROOT = Path(__file__).resolve().parents[1]

# Algorithms x heads whose artifacts differ: linear episode head, prototypes, learned inner lrs /
# temperature / projection (must be saved or dropped correctly).
VARIANTS = {
    "protomaml": dict(algorithm="protomaml", inner_steps=2, inner_lr=0.1),
    "protonet": dict(algorithm="protonet", projection_dim=8, learn_temperature=True),
    "fomaml-metasgd": dict(
        algorithm="fomaml", inner_steps=1, learn_inner_lr=True, inner_params="head", projection_dim=8
    ),
    "maml-linear": dict(algorithm="maml", inner_steps=1, head="linear_zero", distance="cosine"),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The tiny corpus, encoder, one checkpoint per variant, and a 2-step meta-training run."""
    root = tmp_path_factory.mktemp("adapt")
    paths = {"data": write_corpus(root / "data"), "model": write_encoder(root / "model")}
    for name, meta in VARIANTS.items():
        paths[name] = write_meta_checkpoint(root / name, paths["model"], **meta)
    run = root / "run"
    args = [f"output_dir={run}", f"encoder.model={paths['model']}", f"data.data_dir={paths['data']}",
            "max_steps=2", "val_every=0", "checkpoint_every=0"]  # fmt: skip
    assert xmeta_main(["train", "--config", str(ROOT / "recipes" / "configs" / "tiny.yaml"), *args]) == 0
    paths["run"] = run
    return paths


def split(tiny: dict[str, Path], split: str, lang: str = "ccc_Latn") -> list[tuple[str, str]]:
    lines = (tiny["data"] / lang / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [tuple(line.split("\t")) for line in lines]  # type: ignore[misc]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_api_round_trip_gives_identical_predictions(tiny, tmp_path, variant):
    support, test = split(tiny, "dev"), [t for t, _ in split(tiny, "test")]
    predictor = xmeta.adapt(support, model=tiny[variant], lang="ccc_Latn", seed=1)
    assert isinstance(predictor, Predictor) and predictor.label_names == ("health", "money", "sport")
    before = predictor.predict(test)
    assert before.probs.shape == (len(test), 3) and np.allclose(before.probs.sum(1), 1.0)
    out = predictor.save(tmp_path / "adapted")
    tensors = load_file(out / PARAMS)
    assert not any(k.startswith("inner_lrs.") for k in tensors)
    proto_head = variant in ("protonet", "fomaml-metasgd")
    assert ("prototypes" in tensors) == proto_head and ("episode_head.weight" in tensors) != proto_head
    after = xmeta.load_predictor(out).predict(test)
    np.testing.assert_array_equal(after.labels, before.labels)
    np.testing.assert_allclose(after.probs, before.probs, rtol=0, atol=1e-6)
    # order of inputs does not change a text's prediction (length-sorted batches are put back)
    # Other batch compositions pad differently: fp32 rounding only (measured up to 2.2e-6 for protomaml).
    rev = xmeta.load_predictor(out, batch_size=3).predict(test[::-1])
    np.testing.assert_allclose(rev.probs[::-1], before.probs, rtol=0, atol=5e-6)


def test_adapt_accepts_a_file_a_loaded_model_and_is_deterministic(tiny):
    dev = tiny["data"] / "ccc_Latn" / "dev.tsv"
    a = xmeta.adapt(dev, tiny["run"], lang="ccc_Latn")
    source = xmeta.adaptation.load_meta(tiny["run"])
    b = xmeta.adapt(split(tiny, "dev"), source.model, lang="ccc_Latn")
    texts = [t for t, _ in split(tiny, "test")]
    np.testing.assert_allclose(a.predict(texts).probs, b.predict(texts).probs, rtol=0, atol=1e-6)
    assert a.metadata["source"]["checkpoint"].endswith("final")  # run dir -> its final/
    assert b.metadata["source"]["model"] == "in-memory MetaModel"
    assert a.predict([]).probs.shape == (0, 3)


def test_top_level_api_is_lazy():
    import xmeta.adaptation

    assert xmeta.adapt is xmeta.adaptation.adapt and xmeta.load_predictor is xmeta.adaptation.load_predictor
    code = "import sys, xmeta; assert 'torch' not in sys.modules; print(xmeta.__version__)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_cli_round_trip_and_output_schema(tiny, tmp_path, capsys, monkeypatch):
    dev, test = tiny["data"] / "ccc_Latn" / "dev.tsv", tiny["data"] / "ccc_Latn" / "test.tsv"
    out = tmp_path / "swh"
    argv = ["adapt", "--support", str(dev), "--model", str(tiny["run"]), "--out", str(out), "--lang", "ccc_Latn"]
    assert xmeta_main(argv) == 0
    assert "adapted to 3 labels from 24 examples (ccc_Latn)" in capsys.readouterr().out
    card = (out / "README.md").read_text(encoding="utf-8")
    for needle in ("ccc_Latn", "  - sport: 8", "dev.tsv", str(tiny["run"]), "protomaml", "xmeta/2"):
        assert needle in card, needle
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    meta = manifest["info"]
    assert manifest["format"] == "xmeta/2" and manifest["kind"] == "adapted"
    assert meta["label_names"] == ["health", "money", "sport"]
    assert meta["support"]["per_class"] == {"health": 8, "money": 8, "sport": 8} and meta["lang"] == "ccc_Latn"

    preds = tmp_path / "preds.jsonl"
    # fp32 pinned: the labels are compared with the Python API's (fp32) on a tiny model with near ties;
    # the CLI's default (auto: bf16 on CPUs with bf16 units) is checked in tests/test_predict_fast.py.
    argv = ["predict", "--model", str(out), "--input", str(test), "--output", str(preds), "--batch-size", "2",
            "--precision", "fp32"]  # fmt: skip
    assert xmeta_main(argv) == 0
    rows = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines()]
    texts = [t for t, _ in split(tiny, "test")]
    assert [r["text"] for r in rows] == texts
    for r in rows:
        assert set(r) == {"text", "label", "scores"} and list(r["scores"]) == ["health", "money", "sport"]
        assert abs(sum(r["scores"].values()) - 1) < 1e-4 and r["label"] == max(r["scores"], key=r["scores"].get)
    api = xmeta.adapt(dev, tiny["run"], lang="ccc_Latn").predict(texts)
    assert [r["label"] for r in rows] == api.names()

    # plain text to stdout, CSV and JSONL with another column name: same labels
    (tmp_path / "in.txt").write_text("\n".join(texts[:5]) + "\n\n", encoding="utf-8")
    (tmp_path / "in.csv").write_text("id,sentence\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts[:5])))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"sentence": t}) + "\n" for t in texts[:5]))
    capsys.readouterr()
    for name, extra in (
        ("in.txt", []),
        ("in.csv", ["--text-column", "sentence"]),
        ("in.jsonl", ["--text-column", "sentence"]),
    ):
        argv = ["predict", "--model", str(out), "--input", str(tmp_path / name), "--precision", "fp32", *extra]
        assert xmeta_main(argv) == 0
        got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [g["label"] for g in got] == api.names()[:5], name

    # plain text on stdin
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(texts[:3]).encode()), encoding="utf-8"))
    assert xmeta_main(["predict", "--model", str(out), "--input", "-", "--precision", "fp32"]) == 0
    assert [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()] == api.names()[:3]

    # re-adapting into the same directory replaces the artifact
    argv = ["adapt", "--support", str(dev), "--model", str(tiny["run"]), "--out", str(out), "--max-per-class", "2"]
    assert xmeta_main(argv) == 0
    meta = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["info"]
    assert meta["support"]["per_class"] == {"health": 2, "money": 2, "sport": 2} and meta["lang"] == "und"
    assert "18 over the 2-per-class cap" in (out / "README.md").read_text(encoding="utf-8")


def cli_error(argv: list[str], capsys) -> str:
    """Run the CLI, expect exit 2 and a one-line error; return that line."""
    capsys.readouterr()
    assert xmeta_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"xmeta {argv[0]}: error: "), err
    return err[-1]


@pytest.fixture(scope="module")
def artifact(tiny, tmp_path_factory) -> Path:
    return xmeta.adapt(split(tiny, "dev"), tiny["protomaml"]).save(tmp_path_factory.mktemp("art") / "a")


def test_bad_support_inputs_fail_in_one_line(tiny, tmp_path, capsys):
    run, out = str(tiny["run"]), str(tmp_path / "out")

    def adapt_error(content: str | bytes, *extra: str, name: str = "s.tsv") -> str:
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return cli_error(["adapt", "--support", str(path), "--model", run, "--out", out, *extra], capsys)

    assert "no column 'sentence'" in adapt_error("text\tlabel\na\tx\nb\ty\n", "--text-column", "sentence")
    assert "no column 'label'" in adapt_error("text\ttopic\na\tx\nb\ty\n")
    assert "only the label 'x'" in adapt_error("text\tlabel\na\tx\nb\tx\n")
    assert "label(s) 'z' have no example" in adapt_error("text\tlabel\na\tx\nb\ty\n", "--labels", "x,y,z")
    assert "s.tsv:3: not valid UTF-8" in adapt_error(b"text\tlabel\na\tx\n\xff\ty\n")
    assert "labelled 'y' here but 'x'" in adapt_error("text\tlabel\na\tx\nb\ty\na\ty\n")
    assert "empty label" in adapt_error("text,label\na,x\nb,\n", name="s.csv")
    assert "--max-per-class must be >= 1" in adapt_error("text\tlabel\na\tx\nb\ty\n", "--max-per-class", "0")
    assert "file not found" in cli_error(["adapt", "--support", str(tmp_path / "no.tsv"), "--out", out], capsys)
    assert not (tmp_path / "out").exists()


def test_default_model_missing_says_how_to_pass_a_run(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(artifact_store.DEFAULT_ENV, raising=False)
    monkeypatch.setattr(artifact_store, "SHIPPED_DEFAULT", tmp_path / "assets" / "default")
    dev = str(tiny["data"] / "ccc_Latn" / "dev.tsv")
    msg = cli_error(["adapt", "--support", dev, "--out", str(tmp_path / "o")], capsys)
    assert "no default meta-trained model is installed" in msg and "runs/protonet" in msg
    monkeypatch.setenv(artifact_store.DEFAULT_ENV, str(tiny["run"]))  # the bench's variable works here too
    assert xmeta_main(["adapt", "--support", dev, "--out", str(tmp_path / "o")]) == 0


def test_wrong_directories_are_named(tiny, artifact, tmp_path, capsys):
    dev, texts = str(tiny["data"] / "ccc_Latn" / "dev.tsv"), tmp_path / "t.txt"
    texts.write_text("ballc the goalc\n", encoding="utf-8")
    msg = cli_error(["adapt", "--support", dev, "--model", str(artifact), "--out", str(tmp_path / "o")], capsys)
    assert "is an adapted model" in msg
    msg = cli_error(["adapt", "--support", dev, "--model", str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert "not a meta-trained model or run" in msg
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    msg = cli_error(["adapt", "--support", dev, "--model", str(tiny["run"]), "--out", str(tmp_path / "busy")], capsys)
    assert "directory exists and is not an xmeta artifact" in msg and (tmp_path / "busy" / "notes.txt").exists()
    msg = cli_error(["predict", "--model", str(tiny["run"] / "final"), "--input", str(texts)], capsys)
    assert "is a meta-trained model, not an adapted one" in msg
    msg = cli_error(["predict", "--model", str(tmp_path / "nope"), "--input", str(texts)], capsys)
    assert "adapted model directory not found" in msg
    msg = cli_error(["predict", "--model", str(artifact), "--input", str(tmp_path / "missing.tsv")], capsys)
    assert "missing.tsv: file not found" in msg
    msg = cli_error(["predict", "--model", str(artifact), "--input", str(texts), "--batch-size", "0"], capsys)
    assert "--batch-size must be >= 1" in msg


def broken_copy(artifact: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "broken"
    shutil.copytree(artifact, dst)
    return dst


def redigest(d: Path) -> None:
    """Make the manifest match the files again: a consistent artifact whose content is wrong."""
    manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    manifest["files"] = {k: dataclasses.asdict(v) for k, v in describe_files(d).items()}
    (d / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize(
    "damage, message",
    [
        ("format_newer", "format 'xmeta/3' is newer than this xmeta reads ('xmeta/2'); upgrade xmeta"),
        ("format_other", "not an xmeta artifact (format 'something/1'"),
        ("no_weights", "params.safetensors: missing (listed in"),
        ("no_config", "not an adapted model (no xmeta.json"),
        ("bad_json", "xmeta.json: cannot read the manifest"),
        ("corrupt_weights", "params.safetensors: does not match its sha256"),
        ("truncated", "the file is truncated or was changed after it was written"),
        ("corrupt_peft", "adapter_model.safetensors: does not match its sha256"),
        ("wrong_tensors", "tensors do not fit the stored configs"),
        ("wrong_shape", "episode_head.weight has shape (2, 32), expected (3, 32)"),
        ("nan_weights", "non-finite values in"),
        ("bad_config", "Did you mean 'encoder.lora_r'"),
    ],
)
def test_damaged_artifacts_are_refused(artifact, tmp_path, capsys, damage, message):
    d = broken_copy(artifact, tmp_path)
    cfg, weights = d / MANIFEST, d / PARAMS
    meta = json.loads(cfg.read_text(encoding="utf-8"))
    tensors = load_file(weights)
    if damage == "format_newer":
        meta["format"] = "xmeta/3"
    elif damage == "format_other":
        meta["format"] = "something/1"
    elif damage == "no_weights":
        weights.unlink()
    elif damage == "no_config":
        cfg.unlink()
    elif damage == "bad_json":
        cfg.write_text("{", encoding="utf-8")
    elif damage in ("corrupt_weights", "corrupt_peft"):  # a few bytes inside the tensor data, same size
        target = weights if damage == "corrupt_weights" else d / "adapter" / "adapter_model.safetensors"
        data = bytearray(target.read_bytes())
        data[-64:] = b"\xff" * 64
        target.write_bytes(bytes(data))
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "wrong_tensors":
        save_file({k: v for k, v in tensors.items() if "lora_A" not in k}, weights)
    elif damage == "wrong_shape":
        tensors["episode_head.weight"] = tensors["episode_head.weight"][:2].contiguous()
        save_file(tensors, weights)
    elif damage == "nan_weights":
        tensors["episode_head.weight"][0, 0] = float("nan")
        save_file(tensors, weights)
    elif damage == "bad_config":
        meta["encoder"]["lora_rr"] = meta["encoder"].pop("lora_r")
    if cfg.exists() and damage not in ("bad_json",):
        cfg.write_text(json.dumps(meta), encoding="utf-8")
    if damage in ("wrong_tensors", "wrong_shape", "nan_weights"):
        redigest(d)
    with pytest.raises(InputError, match=".*") as info:
        xmeta.load_predictor(d)
    assert message in str(info.value) and "\n" not in str(info.value)
    texts = tmp_path / "t.txt"
    texts.write_text("ballc\n", encoding="utf-8")
    assert message in cli_error(["predict", "--model", str(d), "--input", str(texts)], capsys)


def test_scores_that_overflow_are_an_error_not_an_output(artifact, tmp_path, capsys):
    """Finite weights can still give NaN scores (a diverged temperature): never printed as a label."""
    d = broken_copy(artifact, tmp_path)
    tensors = load_file(d / PARAMS)
    tensors["head.log_scale"] = torch.tensor(1000.0)  # exp overflows: infinite logits, NaN probabilities
    tensors.pop("episode_head.weight"), tensors.pop("episode_head.bias")
    cfg = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    cfg["meta"]["algorithm"] = "protonet"
    (d / MANIFEST).write_text(json.dumps(cfg), encoding="utf-8")
    tensors["prototypes"] = torch.randn(3, 32)
    save_file(tensors, d / PARAMS)
    redigest(d)
    texts = tmp_path / "t.txt"
    texts.write_text("ballc goalc\n", encoding="utf-8")
    assert "non-finite class scores for the text 'ballc goalc'" in cli_error(
        ["predict", "--model", str(d), "--input", str(texts)], capsys
    )


def test_corrupt_meta_run_is_refused_by_adapt(tiny, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run)
    params = run / "final" / PARAMS
    data = bytearray(params.read_bytes())
    data[-256:] = bytes(256)  # zeros over the last tensor's data
    params.write_bytes(bytes(data))
    dev = str(tiny["data"] / "ccc_Latn" / "dev.tsv")
    msg = cli_error(["adapt", "--support", dev, "--model", str(run), "--out", str(tmp_path / "o")], capsys)
    assert f"{params}: does not match its sha256" in msg and "re-create it with `xmeta train`" in msg
    assert not (tmp_path / "o").exists()


def test_old_format_artifact_loads_identically_and_migrates(artifact, tiny, tmp_path, capsys):
    """The compatibility path: an adapted model written before xmeta/2 (no digests) still loads."""
    old = tmp_path / "old"
    old.mkdir()
    manifest = json.loads((artifact / MANIFEST).read_text(encoding="utf-8"))
    legacy = {"format": "xmeta-adapted/1", **manifest["info"], "encoder": manifest["encoder"], "meta": manifest["meta"]}
    (old / "xmeta_adapted.json").write_text(json.dumps(legacy), encoding="utf-8")
    (old / "adapted.safetensors").write_bytes((artifact / PARAMS).read_bytes())
    texts = [t for t, _ in split(tiny, "test")]
    want = xmeta.load_predictor(artifact).predict(texts).probs
    np.testing.assert_array_equal(xmeta.load_predictor(old).predict(texts).probs, want)
    assert xmeta_main(["artifacts", "migrate", str(old)]) == 0
    assert "xmeta-adapted/1 -> xmeta/2" in capsys.readouterr().out
    assert (old / MANIFEST).is_file() and not (old / "xmeta_adapted.json").exists()
    np.testing.assert_array_equal(xmeta.load_predictor(old).predict(texts).probs, want)
    assert xmeta_main(["artifacts", "verify", str(old)]) == 0
    assert "[adapted, protomaml]: ok: " in capsys.readouterr().out


def test_bf16_precision_predicts_like_fp32_and_is_really_bf16(tiny, tmp_path, capsys):
    support, test = split(tiny, "dev"), [t for t, _ in split(tiny, "test")]
    out = xmeta.adapt(support, model=tiny["protonet"], lang="ccc_Latn").save(tmp_path / "adapted")
    fp32 = xmeta.load_predictor(out).predict(test)
    bf16 = xmeta.load_predictor(out, precision="bf16").predict(test)
    assert bf16.probs.dtype == fp32.probs.dtype and np.allclose(bf16.probs.sum(1), 1.0)
    # bf16 keeps ~3 significant digits: close to fp32, but not identical (autocast did run)
    assert 0 < np.abs(bf16.probs - fp32.probs).max() < 0.05
    assert (bf16.labels == fp32.labels).mean() >= 0.9
    direct = xmeta.adapt(support, model=tiny["protonet"], lang="ccc_Latn", precision="bf16").predict(test)
    np.testing.assert_allclose(direct.probs, bf16.probs, rtol=0, atol=0.02)  # adapted and predicted in bf16

    preds = tmp_path / "preds.jsonl"
    dev = tiny["data"] / "ccc_Latn" / "test.tsv"
    argv = ["predict", "--model", str(out), "--input", str(dev), "--output", str(preds), "--precision", "bf16"]
    assert xmeta_main(argv) == 0
    rows = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines()]
    assert [r["label"] for r in rows] == bf16.names()
    with pytest.raises(InputError, match="precision must be one of fp32, bf16; got 'fp16'"):
        xmeta.load_predictor(out, precision="fp16")
    with pytest.raises(SystemExit):
        xmeta_main(["predict", "--model", str(out), "--input", str(dev), "--precision", "half"])
    assert "invalid choice: 'half'" in capsys.readouterr().err
