"""notebooks/adapt_new_language.ipynb runs end to end (tiny model + tiny corpus), so it never rots."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from adapt_fixtures import train_real_run, write_causal_lm, write_corpus, write_encoder, write_meta_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "adapt_new_language.ipynb"


def run_notebook(params: dict[str, object], timeout: int = 900, notebook: Path = NOTEBOOK) -> nbformat.NotebookNode:
    """Execute a notebook with a cell overriding ``params`` injected after its parameters cell."""
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    override = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(override))
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
    )
    client.execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> tuple[str, list[str]]:
    """All stream/text output of the executed notebook, and the MIME types of its rich outputs."""
    text, mimes = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append(out["text"])
            mimes.extend(out.get("data", {}))
    return "".join(text), mimes


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    first = "".join(code[0]["source"])
    for name in ('MODEL = "default"', 'LANG = "swh_Latn"', "K = 5", "XMETA_DATA_DIR", "RUN_ICL = True"):
        assert name in first, name


def test_notebook_runs_on_a_tiny_model(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it: tiny ops crawl with spinning threads
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    data = write_corpus(tmp_path / "data")
    run = write_meta_checkpoint(tmp_path / "run", write_encoder(tmp_path / "enc"), algorithm="protomaml",
                                inner_steps=2, inner_lr=0.1)  # fmt: skip
    params = {"MODEL": str(run), "LANG": "ccc_Latn", "K": 2, "DATA_DIR": str(data), "TASK": "files",
              "ICL_MODEL": str(write_causal_lm(tmp_path / "lm")), "RUN_ICL": True, "MAX_QUERIES": 12}  # fmt: skip
    nb = run_notebook(params)
    text, mimes = outputs(nb)
    assert "ccc_Latn: 3 classes, 6 support sentences (dev), 12 test sentences" in text
    assert "reloaded predictor gives the same labels: True" in text
    for method in ("meta-learned (adapted)", "frozen prototypes", "in-context (lm)"):
        assert method in text, method
    assert "image/png" in mimes  # the comparison bar plot


@pytest.mark.slow
def test_notebook_runs_on_the_real_encoder(real_run: Path, data_dir: Path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it (see test_meta_real on this machine)
    params = {"MODEL": str(real_run), "LANG": "swh_Latn", "K": 5, "DATA_DIR": str(data_dir), "RUN_ICL": True,
              "MAX_QUERIES": 14}  # fmt: skip
    text, mimes = outputs(run_notebook(params, timeout=1800))
    assert "swh_Latn: 7 classes, 35 support sentences (dev), 14 test sentences" in text
    assert "in-context (gemma-3-270m)" in text and "image/png" in mimes


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, data_dir: Path) -> Path:
    return train_real_run(tmp_path_factory.mktemp("real") / "run", data_dir)
