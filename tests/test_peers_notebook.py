"""notebooks/compare_with_peers.ipynb runs end to end on tiny models (meta run, SetFit, probe, ICL)."""

from __future__ import annotations

import json
from pathlib import Path

from adapt_fixtures import write_causal_lm, write_corpus, write_encoder, write_meta_checkpoint
from test_adapt_notebook import outputs, run_notebook

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_with_peers.ipynb"


def test_notebook_is_committed_without_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    first = "".join(code[0]["source"])
    for name in ('META = "default"', 'LANG = "yor_Latn"', "K = 5", "XMETA_DATA_DIR", "OPENAI_MODEL"):
        assert name in first, name


def test_notebook_compares_every_peer_on_a_tiny_model(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it: tiny ops crawl with spinning threads
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)  # the served-LLM row is optional
    data = write_corpus(tmp_path / "data")
    enc = write_encoder(tmp_path / "enc")
    run = write_meta_checkpoint(tmp_path / "run", enc, algorithm="protonet")
    params = {"META": str(run), "ENCODER": str(enc), "LANG": "ccc_Latn", "N_WAY": 3, "K": 2, "Q": 2, "EPISODES": 2, "TASK": "files",
              "DATA_DIR": str(data), "ICL_MODEL": str(write_causal_lm(tmp_path / "lm")), "RUN_ICL": True,
              "SETFIT_OPTIONS": {"max_steps": 2, "text_prefix": ""}, "ENCODER_OPTIONS": {"text_prefix": ""},
              "OUT": str(tmp_path / "out")}  # fmt: skip
    text, mimes = outputs(run_notebook(params, notebook=NOTEBOOK))
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["methods"]) == {f"meta:{run}", "setfit", "logreg", "frozen-proto", f"icl:{tmp_path / 'lm'}"}
    for name in ("setfit", "logreg", "frozen-proto"):
        assert name in text
    assert "best on ccc_Latn:" in text and "image/png" in mimes  # the accuracy-vs-cost plot
