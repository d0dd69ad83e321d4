"""Fast prediction: the packed, length-sorted path equals the straightforward padded one; the input
is streamed in bounded memory; an interrupted `xmeta predict --output` resumes where it stopped."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from adapt_fixtures import write_corpus, write_encoder, write_meta_checkpoint

import xmeta
from xmeta.adaptation.predictor import AdaptedPredictor, cpu_has_bf16, resolve_precision
from xmeta.adaptation.texts import chunked, iter_texts, read_texts
from xmeta.cli import main as xmeta_main
from xmeta.errors import InputError
from xmeta.meta import learners
from xmeta.meta.maml import episode_logits
from xmeta.meta.modes import eval_mode
from xmeta.models.inference import InferenceLayers

ROOT = Path(__file__).resolve().parents[1]
REAL_PREDICT = AdaptedPredictor.predict


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict_fast")
    data = write_corpus(root / "data")
    ckpt = write_meta_checkpoint(root / "ckpt", write_encoder(root / "enc"), algorithm="protonet", projection_dim=8)
    model = root / "model"
    assert xmeta_main(["adapt", "--support", str(data / "ccc_Latn" / "dev.tsv"), "--model", str(ckpt),
                       "--out", str(model)]) == 0  # fmt: skip
    texts = [line.split("\t")[0] for line in (data / "ccc_Latn" / "test.tsv").read_text().splitlines()[1:]]
    # Varied lengths (1..3 sentences joined): several attention buckets per packed batch.
    many = [" ".join(texts[j % len(texts)] for j in range(i % 3 + 1)) for i in range(100)]
    (root / "in.txt").write_text("\n".join(many) + "\n", encoding="utf-8")
    return {"model": model, "input": root / "in.txt", "data": data}


def reference_probs(predictor: AdaptedPredictor, texts: list[str]) -> np.ndarray:
    """The straightforward computation: one padded batch through the whole encoder, the same head."""
    model, enc = predictor.model, predictor.model.encoder
    with torch.no_grad(), eval_mode(model):
        logits = episode_logits(model, predictor.state, enc.tokenize(texts))  # TokenBatch: padded HF forward
    return torch.softmax(logits.double(), -1).numpy()


@pytest.mark.parametrize("layers", ["auto", "packed", "general"])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_fast_path_equals_the_padded_reference(tiny, batch_size, layers, monkeypatch):
    if layers == "packed":  # every batch through the packed layers, however little padding it has
        monkeypatch.setattr(learners, "PADDED_OVERHEAD_MAX", 0.0)
    if layers == "general":  # no prediction layers (xmeta.models.inference): functional_call per batch
        monkeypatch.setattr(InferenceLayers, "build", classmethod(lambda cls, *a, **k: None))
    predictor = xmeta.load_predictor(tiny["model"], batch_size=batch_size)
    assert (predictor._episode.inference_layers is None) == (layers == "general")
    texts = read_texts(tiny["input"])
    got = predictor.predict(texts)
    np.testing.assert_allclose(got.probs, reference_probs(predictor, texts), rtol=0, atol=1e-5)
    assert got.labels.tolist() == got.probs.argmax(1).tolist()


@pytest.mark.slow
def test_fast_path_equals_the_padded_reference_on_the_default_model():
    from xmeta.data import resolve_data_dir
    from xmeta.data.readers import read_rows

    lang_dir = (resolve_data_dir() or ROOT.parent / "shared" / "data") / "sib200" / "annotated" / "swh_Latn"
    rows = read_rows(lang_dir / "dev.tsv", ["text", "category"])
    by_label: dict[str, list[str]] = {}
    for r in rows:
        by_label.setdefault(r.values[1], []).append(r.values[0])
    support = [(t, label) for label, ts in sorted(by_label.items()) for t in ts[:5]]
    predictor = xmeta.adapt(support, "default", lang="swh_Latn", batch_size=16)
    texts = [r.values[0] for r in read_rows(lang_dir / "test.tsv", ["text"])][:48]
    want = reference_probs(predictor, texts)
    np.testing.assert_allclose(predictor.predict(texts).probs, want, rtol=0, atol=1e-4)
    predictor.batch_size = 7  # batches of mixed lengths: packed layers
    np.testing.assert_allclose(predictor._episode.predict(texts[::-1]).probs, want[::-1], rtol=0, atol=1e-4)
    # bf16 (the default `auto` on CPUs with bf16 units): oneDNN GEMMs, float32 residual stream.
    # Measured on 2,000 sentences: |dp| <= 0.018, labels equal on 99.25% (xmeta.models.inference).
    bf16 = xmeta.adapt(support, "default", lang="swh_Latn", batch_size=16, precision="bf16")
    got = bf16.predict(texts).probs
    assert np.abs(got - want).max() < 0.05
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95


# ---------------------------------------------------------------- streaming input


def test_streaming_reader_holds_one_chunk(tmp_path):
    path = tmp_path / "big.txt"
    line = "habari ya leo, timu ilishinda mechi ya mpira wa miguu jana jioni\n"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(200_000):
            f.write(f"{i} {line}")
    assert path.stat().st_size > 13_000_000
    chunk = 1000
    tracemalloc.start()
    n = 0
    for part in chunked(iter_texts(path), chunk):
        n += len(part)
        del part
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 200_000
    # One chunk of 1,000 ~70-character strings is ~0.2 MB; the file is 13 MB.
    assert peak < 1_000_000, peak


def test_streaming_errors_name_the_file_and_line(tmp_path):
    rows = "".join(f"{i}\tsentence {i}\n" for i in range(5000))
    bad_tsv = tmp_path / "a.tsv"
    bad_tsv.write_text("id\ttext\n" + rows + "7\tx\textra\n", encoding="utf-8")
    stream = iter_texts(bad_tsv)
    assert [next(stream) for _ in range(3)] == ["sentence 0", "sentence 1", "sentence 2"]  # streams before the error
    with pytest.raises(InputError, match=r"a.tsv:5002: expected 2 fields \(id, text\), got 3"):
        list(stream)
    bad_jsonl = tmp_path / "a.jsonl"
    bad_jsonl.write_text('{"text": "a"}\n\n{"text": "b"\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"a.jsonl:3: not valid JSON"):
        list(iter_texts(bad_jsonl))
    bad_utf8 = tmp_path / "b.txt"
    bad_utf8.write_bytes(b"ok\nfine\n\xff\n")
    with pytest.raises(InputError, match=r"b.txt:3: not valid UTF-8 \(invalid start byte at byte 8\)"):
        list(iter_texts(bad_utf8))
    with pytest.raises(InputError, match=r"a.tsv:1: no column 'sentence'"):
        next(iter_texts(bad_tsv, text_column="sentence"))
    bom = tmp_path / "bom.csv"
    bom.write_bytes('\ufefftext,id\n"a, ""b""",1\n'.encode())
    assert read_texts(bom) == ['a, "b"']


# ---------------------------------------------------------------- interruption and resume


def predict_argv(tiny, out: Path, *extra: str) -> list[str]:
    return [
        "predict",
        "--model",
        str(tiny["model"]),
        "--input",
        str(tiny["input"]),
        "--output",
        str(out),
        "--batch-size",
        "1",
        *extra,
    ]  # fmt: skip  (16-text chunks: 7 chunks for 100 texts)


class FaultAfter:
    """Counts the texts predicted; raises KeyboardInterrupt (as Ctrl-C would) on chunk ``n + 1``."""

    def __init__(self, monkeypatch, n: int | None) -> None:
        self.calls, self.texts, self.n = 0, 0, n

        def predict(predictor, texts):
            self.calls += 1
            if self.n is not None and self.calls > self.n:
                raise KeyboardInterrupt
            self.texts += len(texts)
            return REAL_PREDICT(predictor, texts)

        monkeypatch.setattr(AdaptedPredictor, "predict", predict)


def test_interrupted_run_resumes_where_it_stopped(tiny, tmp_path, monkeypatch):
    full = tmp_path / "full.jsonl"
    assert xmeta_main(predict_argv(tiny, full)) == 0
    want = full.read_text(encoding="utf-8")
    assert len(want.splitlines()) == 100 and not list(tmp_path.glob("*.partial*"))

    out = tmp_path / "preds.jsonl"
    FaultAfter(monkeypatch, 3)
    assert xmeta_main(predict_argv(tiny, out)) == 130
    partial, sidecar = tmp_path / "preds.jsonl.partial", tmp_path / "preds.jsonl.partial.json"
    assert not out.exists() and partial.exists()  # nothing that looks complete
    state = json.loads(sidecar.read_text(encoding="utf-8"))
    assert state["texts_done"] == 48 and partial.read_text(encoding="utf-8") == "".join(want.splitlines(True)[:48])
    # A crash in the middle of writing a chunk: bytes past the recorded point are dropped.
    with open(partial, "ab") as f:
        f.write(b'{"text": "half a li')
    fault = FaultAfter(monkeypatch, None)
    assert xmeta_main(predict_argv(tiny, out)) == 0
    assert fault.texts == 52  # only what was left
    assert out.read_text(encoding="utf-8") == want and not partial.exists() and not sidecar.exists()


def test_no_resume_and_a_changed_input_start_over(tiny, tmp_path, monkeypatch):
    out = tmp_path / "preds.jsonl"
    FaultAfter(monkeypatch, 2)
    assert xmeta_main(predict_argv(tiny, out)) == 130
    fault = FaultAfter(monkeypatch, None)
    assert xmeta_main(predict_argv(tiny, out, "--no-resume")) == 0
    assert fault.texts == 100 and len(out.read_text().splitlines()) == 100

    FaultAfter(monkeypatch, 2)
    assert xmeta_main(predict_argv(tiny, out)) == 130
    os.utime(tiny["input"], ns=(1, 1))  # the input changed since: its lines would not match
    fault = FaultAfter(monkeypatch, None)
    assert xmeta_main(predict_argv(tiny, out)) == 0
    assert fault.texts == 100


def test_a_failed_run_leaves_no_partial_output(tiny, tmp_path, monkeypatch):
    out = tmp_path / "preds.jsonl"

    def broken(predictor, texts):
        raise RuntimeError("boom")

    monkeypatch.setattr(AdaptedPredictor, "predict", broken)
    with pytest.raises(RuntimeError, match="boom"):
        xmeta_main(predict_argv(tiny, out))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- precision


def test_auto_precision_follows_the_hardware(tiny):
    assert resolve_precision("auto") == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    with pytest.raises(InputError, match="precision must be one of"):
        resolve_precision("fp16")
    assert xmeta.load_predictor(tiny["model"], precision="auto").precision == resolve_precision("auto")
