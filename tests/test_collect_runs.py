"""eval/collect_runs.py: a run joins the attempts table; earlier rows and the notes below it stay."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))

import collect_runs  # noqa: E402  (eval/collect_runs.py)


def _run(root: Path, name: str, train_seconds: float | None) -> Path:
    run = root / name
    (run / "final").mkdir(parents=True)
    cfg = {"encoder": {"lora_r": 8, "target_modules": ["query", "value"], "lora_top_layers": 4},
           "meta": {"algorithm": "protomaml", "distance": "cosine", "projection_dim": 256, "inner_steps": 3,
                    "inner_lr": 0.01, "inner_params": "all"},
           "data": {"train_langs": ["eng_Latn", "fra_Latn"], "val_langs": ["nya_Latn"], "val_episodes": 20},
           "mixed_precision": "bf16", "meta_batch_size": 4}  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    rows = [
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": 0.9, "val_acc": 0.5},
        {"step": 4, "loss": 0.8, "val_acc": 0.55},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    state = {"step": 4} | ({} if train_seconds is None else {"train_seconds": train_seconds})
    (run / "final" / "training.json").write_text(json.dumps(state), encoding="utf-8")
    (run / "final" / "xmeta.json").write_text('{"format": "xmeta/2"}', encoding="utf-8")
    return run


def test_a_new_run_joins_the_table_and_earlier_rows_and_notes_stay(tmp_path, monkeypatch) -> None:
    out = tmp_path / "meta_runs"
    monkeypatch.setattr(collect_runs, "OUT", out)
    first = _run(tmp_path / "runs", "first", None)
    monkeypatch.setattr(sys, "argv", ["collect_runs.py", str(first)])
    collect_runs.main()
    (first / "metrics.jsonl").unlink()  # the run directory is gone later: its row lives in attempts.json
    md = (out / "attempts.md").read_text(encoding="utf-8")
    (out / "attempts.md").write_text(md + "\n## Notes\n\nWritten by hand.\n", encoding="utf-8")
    second = _run(tmp_path / "runs", "second", 7020.0)
    monkeypatch.setattr(sys, "argv", ["collect_runs.py", str(second)])
    collect_runs.main()
    rows = {r["name"]: r for r in json.loads((out / "attempts.json").read_text(encoding="utf-8"))}
    assert set(rows) == {"first", "second"}
    assert rows["first"]["wall_minutes"] is None and rows["second"]["wall_minutes"] == 117.0
    assert rows["second"]["best_val"] == 0.55 and rows["second"]["best_step"] == 4 and rows["second"]["episodes"] == 16
    md = (out / "attempts.md").read_text(encoding="utf-8")
    assert "| `first` |" in md and "| not recorded |" in md and "| 117 |" in md
    assert md.endswith("\n## Notes\n\nWritten by hand.\n")
    assert (out / "second" / "xmeta.json").is_file() and not (out / "second" / "metrics.jsonl").exists()
