"""xmeta.artifacts: one manifest, one resolver, one atomic writer, digests on every load, the
committed artifacts in the current format, peft-native exports, Hub cards, and old formats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from adapt_fixtures import encoder_config, write_corpus, write_encoder, write_meta_checkpoint
from safetensors.torch import load_file, save_file

from xmeta.artifacts import (
    MANIFEST,
    PARAMS,
    SHIPPED_DEFAULT,
    ArtifactError,
    Manifest,
    TrainingData,
    open_artifact,
    push_to_hub,
    read_front_matter,
    read_manifest,
    resolve,
    write_artifact,
)
from xmeta.cli import main as xmeta_main
from xmeta.errors import XmetaError
from xmeta.meta import load_meta_model
from xmeta.models import zoo

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = [SHIPPED_DEFAULT, *sorted(p for p in (ROOT / "eval" / "results" / "meta_runs").iterdir() if p.is_dir())]


@pytest.fixture(scope="module")
def enc_dir(tmp_path_factory) -> Path:
    return write_encoder(tmp_path_factory.mktemp("enc"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_artifacts_are_current_verified_and_record_their_data(path: Path) -> None:
    manifest = open_artifact(path)
    assert manifest.legacy is None and manifest.kind == "meta"
    assert manifest.base_model == "intfloat/multilingual-e5-small"
    training = TrainingData.from_text((path / "training_data.json").read_text(encoding="utf-8"))
    assert training.task == "sib200" and training.has_ids
    assert manifest.training["sha256"] == training.summary()["sha256"]
    card = read_front_matter((path / "README.md").read_text(encoding="utf-8"))
    keys = ("library_name", "base_model", "language", "datasets", "metrics", "license", "pipeline_tag")
    assert all(k in card for k in keys), card.keys()
    assert card["base_model"] == "intfloat/multilingual-e5-small" and card["datasets"] == ["Davlan/sib200"]
    if manifest.encoder["lora_r"]:  # head-only runs have no adapters: their export is the head alone
        config = json.loads((path / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
        assert config["base_model_name_or_path"] == "intfloat/multilingual-e5-small"
    assert (path / "adapter" / "head.safetensors").is_file()


def test_resolver_rules(tmp_path: Path, enc_dir: Path) -> None:
    run = tmp_path / "run"
    best = write_meta_checkpoint(run / "best", enc_dir)
    assert resolve(run) == best  # no final/ yet: best/
    final = write_meta_checkpoint(run / "final", enc_dir)
    assert resolve(run) == final and resolve(final) == final
    other = tmp_path / "other"
    write_meta_checkpoint(other / "a", enc_dir)
    write_meta_checkpoint(other / "b", enc_dir)
    with pytest.raises(ArtifactError, match=r"several meta-trained models \(a, b\)"):
        resolve(other)
    with pytest.raises(ArtifactError, match="meta-trained model directory not found"):
        resolve(tmp_path / "nope")


def test_writer_is_atomic_and_never_replaces_foreign_directories(tmp_path: Path) -> None:
    def manifest() -> Manifest:
        return Manifest("meta", {}, {})

    out = write_artifact(tmp_path / "a", manifest(), {"x.txt": lambda p: p.write_text("one")})
    assert read_manifest(out).files["x.txt"].bytes == 3

    def boom(p: Path) -> None:
        p.write_text("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_artifact(out, manifest(), {"x.txt": lambda p: p.write_text("two"), "y.txt": boom})
    assert (out / "x.txt").read_text() == "one" and sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ArtifactError, match="not an xmeta artifact"):
        write_artifact(mine, manifest(), {"x.txt": lambda p: p.write_text("one")})
    assert (mine / "notes.txt").read_text() == "keep"


def test_old_meta_artifact_loads_and_migrates_with_its_training_ids(tmp_path: Path, enc_dir: Path) -> None:
    """The compatibility path for runs written before xmeta/2: same tensors, ids read from the data."""
    data = write_corpus(tmp_path / "data")
    new = write_meta_checkpoint(tmp_path / "new", enc_dir, algorithm="protonet", projection_dim=8)
    manifest = read_manifest(new)
    old = tmp_path / "old"
    old.mkdir()
    legacy = {"format": "xmeta-meta/1", "encoder": manifest.encoder, "meta": manifest.meta,
              "extra": {"step": 7, "val_acc": 0.5, "data": {"task": "files", "train_langs": ["aaa_Latn"],
                                                            "val_langs": ["bbb_Latn"]}}}  # fmt: skip
    (old / "xmeta_meta.json").write_text(json.dumps(legacy), encoding="utf-8")
    shutil.copyfile(new / PARAMS, old / "meta_params.safetensors")
    (old / "adapter").mkdir()  # the old export, with module names peft could not match
    (old / "README.md").write_text("# old card\n\nLoad it with `xmeta adapt --model <this dir>` or ...\n")
    want = load_meta_model(new).meta_state_dict()
    got = load_meta_model(old).meta_state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert xmeta_main(["artifacts", "migrate", str(old), "--data-dir", str(data)]) == 0
    migrated = open_artifact(old)
    assert migrated.legacy is None and migrated.step == 7 and migrated.val_acc == 0.5
    training = TrainingData.from_text((old / "training_data.json").read_text(encoding="utf-8"))
    assert training.splits_by_lang == {"aaa_Latn": ("train",), "bbb_Latn": ("dev",)}
    assert len(training.leakage_records()) == 3 * 12 + 3 * 8  # every row of those splits
    assert all(torch.equal(load_meta_model(old).meta_state_dict()[k], want[k]) for k in want)
    card = (old / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "# old card" in card and "PeftModel.from_pretrained" in card
    assert not (old / "meta_params.safetensors").exists() and (old / "adapter" / "adapter_model.safetensors").is_file()


def test_corrupt_cached_encoder_is_refused_on_first_use(tmp_path: Path, monkeypatch, enc_dir: Path, capsys) -> None:
    """The cache rule: digests are checked on an entry's first use in a process, before any weight is used."""
    monkeypatch.setenv("XMETA_CACHE", str(tmp_path / "cache"))
    spec = zoo.ModelSpec("tiny-enc", "nobody/tiny-enc", "encoder", "MIT", ("none",),
                         lambda out: shutil.copytree(enc_dir, out, dirs_exist_ok=True))  # fmt: skip
    monkeypatch.setitem(zoo.ZOO._items, "tiny-enc", spec)
    entry = zoo.pull("tiny-enc")
    data = write_corpus(tmp_path / "data")
    cfg = {**json.loads((write_meta_checkpoint(tmp_path / "m", enc_dir) / MANIFEST).read_text())}
    cfg["encoder"]["model"] = "tiny-enc"
    (tmp_path / "m" / MANIFEST).write_text(json.dumps(cfg))  # the manifest's own digest list is unchanged
    weights = entry / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-2048:] = b"\xff" * 2048  # a few KB of the tensor data: NaN weights, same size
    weights.write_bytes(bytes(raw))
    monkeypatch.setattr(zoo, "_VERIFIED", set())  # a new process
    argv = ["adapt", "--support", str(data / "ccc_Latn" / "dev.tsv"), "--model", str(tmp_path / "m"),
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert xmeta_main(argv) == 2
    err = capsys.readouterr().err
    assert f"{weights} does not match its sha256" in err and "xmeta models pull --force tiny-enc" in err
    assert not (tmp_path / "o").exists()


def test_push_to_hub_verifies_first_and_says_when_the_hub_is_off(tmp_path: Path, enc_dir: Path, monkeypatch) -> None:
    art = write_meta_checkpoint(tmp_path / "a", enc_dir)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(XmetaError, match="HF_HUB_OFFLINE"):
        push_to_hub(art, "someone/xmeta-test")
    tensors = load_file(art / PARAMS)
    save_file({k: v + 1 for k, v in tensors.items()}, art / PARAMS)
    with pytest.raises(ArtifactError, match="changed after it was written"):
        push_to_hub(art, "someone/xmeta-test")


def test_adapted_card_has_hub_front_matter(tmp_path: Path, enc_dir: Path) -> None:
    import xmeta

    data = write_corpus(tmp_path / "data")
    run = write_meta_checkpoint(tmp_path / "run", enc_dir, algorithm="protonet")
    out = xmeta.adapt(data / "ccc_Latn" / "dev.tsv", model=run, lang="ccc_Latn").save(tmp_path / "adapted")
    card = read_front_matter((out / "README.md").read_text(encoding="utf-8"))
    assert card["pipeline_tag"] == "text-classification" and card["language"] == ["ccc"]
    assert card["library_name"] == "peft" and "base_model" not in card  # a local encoder has no Hub id
    head = load_file(out / "adapter" / "head.safetensors")
    assert head["prototypes"].shape == (3, 32)
    assert encoder_config(enc_dir).lora_r == 2


@pytest.mark.slow
def test_shipped_default_loads_in_plain_peft_with_xmeta_embeddings() -> None:
    """The documented snippet's path: transformers + peft read the default's export, same embeddings."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    meta = load_meta_model("default")
    texts = ["Mpira wa miguu ni mchezo maarufu.", "Bei ya mafuta imepanda tena.", "ሕክምና በሆስፒታል"]
    want = meta.encoder.encode(texts)
    path = zoo.resolve_model(meta.encoder.cfg.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(path), str(SHIPPED_DEFAULT / "adapter")).eval()
    batch = tok(["query: " + t for t in texts], padding=True, truncation=True, max_length=96, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    got = (h * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    base = AutoModel.from_pretrained(path)
    with torch.no_grad():
        plain = base(**batch).last_hidden_state
    assert (plain - h).abs().max() > 1e-3  # the adapters really are applied (the old export loaded none)
