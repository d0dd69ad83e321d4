"""eval/collect_runs.py: a run joins the attempts table; earlier rows and the notes below it stay."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from xmeta.config import to_dict

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
    assert (out / "val_curves.png").read_bytes().startswith(b"\x89PNG")  # both runs' curves, plotted


def test_a_checkpoint_is_published_as_an_artifact_with_its_step_and_validation(tmp_path, monkeypatch) -> None:
    from adapt_fixtures import encoder_config, write_encoder, write_meta_checkpoint

    from xmeta.artifacts import open_artifact
    from xmeta.artifacts.training_data import training_data_of
    from xmeta.meta import MetaConfig, MetaModel
    from xmeta.meta.checkpoint import load_meta_model
    from xmeta.models.encoder import Encoder
    from xmeta.training.checkpoint import save_checkpoint

    out = tmp_path / "meta_runs"
    monkeypatch.setattr(collect_runs, "OUT", out)
    run = _run(tmp_path / "runs", "mamlpp", 60.0)
    model_dir = write_encoder(tmp_path / "enc")
    (run / "final").rename(tmp_path / "stub")
    write_meta_checkpoint(run / "final", model_dir, algorithm="maml", learn_inner_lr=True)  # the chosen step
    later = MetaModel(Encoder.from_config(encoder_config(model_dir)), MetaConfig(algorithm="maml", learn_inner_lr=True))
    with torch.no_grad():
        for p in later.meta_params().values():
            p.add_(0.5)  # a state unlike the chosen one
    opt = torch.optim.SGD(later.meta_params().values(), lr=0.1)
    save_checkpoint(run, 4, later.meta_state_dict(), opt.state_dict(), {}, {"best_val": 0.55},
                    encoder=to_dict(later.encoder.cfg), meta=to_dict(later.cfg))  # fmt: skip

    monkeypatch.setattr(sys, "argv", ["collect_runs.py", str(run), "--checkpoint", "4"])
    collect_runs.main()
    published = out / "mamlpp_step4"
    manifest = open_artifact(published)  # a verified artifact, loadable as meta:<dir>
    assert manifest.kind == "meta" and manifest.step == 4 and manifest.val_acc == 0.55
    assert training_data_of(manifest) == training_data_of(open_artifact(run / "final"))
    loaded = load_meta_model(published).meta_state_dict()
    for name, tensor in later.meta_state_dict().items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0)
    rows = {r["name"] for r in json.loads((out / "attempts.json").read_text(encoding="utf-8"))}
    assert rows == {"mamlpp"}  # the run's row only: the checkpoint is a diagnostic artifact

    monkeypatch.setattr(sys, "argv", ["collect_runs.py", str(run), "--checkpoint", "3"])
    with pytest.raises(SystemExit, match=r"no checkpoint of step 3 \(kept: step-00000004\)"):
        collect_runs.main()


def test_the_table_shows_each_runs_wide_validation_benchmark_and_retimed_wall_time(tmp_path, monkeypatch) -> None:
    out = tmp_path / "meta_runs"
    monkeypatch.setattr(collect_runs, "OUT", out)
    for name, seconds in (("timed", 3000.0), ("old", None)):
        run = _run(tmp_path / "runs", name, seconds)
        if name == "timed":  # task diversity shows in the training-data column
            cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
            cfg["data"] |= {"n_way": 7, "n_way_min": 3, "aux_task": "afrisenti", "aux_fraction": 0.25}
            (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
        monkeypatch.setattr(sys, "argv", ["collect_runs.py", str(run)])
        collect_runs.main()
    results = tmp_path  # eval/results/, beside meta_runs/
    (results / "selection").mkdir()
    (results / "selection" / "results.json").write_text(json.dumps({"runs": [
        {"run": "eval/results/meta_runs/old", "accuracy": 0.5934}]}), encoding="utf-8")  # fmt: skip
    (results / "sib200_lowres").mkdir()
    by_k = {k: {"methods": {"meta:eval/results/meta_runs/old": {"mean_accuracy": acc, "complete": True},
                            "meta:eval/results/meta_runs/timed": {"mean_accuracy": acc, "complete": True}}}
            for k, acc in (("10", 0.634), ("1", 0.429), ("5", 0.609))}  # fmt: skip
    by_k["10"]["methods"]["meta:eval/results/meta_runs/timed"]["complete"] = False  # a failed cell: no benchmark entry
    (results / "sib200_lowres" / "results.json").write_text(json.dumps({"by_k": by_k}), encoding="utf-8")
    (results / "perf").mkdir()
    (results / "perf" / "recipe_wall_times.json").write_text(json.dumps({"rows": [
        {"run": "old", "estimate_min": 41.6}, {"run": "timed", "estimate_min": 99.0}]}), encoding="utf-8")  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["collect_runs.py"])  # no run: the table again
    collect_runs.main()
    rows = {line.split(" | ")[0]: line for line in (out / "attempts.md").read_text(encoding="utf-8").splitlines()}
    assert "| 0.5500 (4) | 59.3 | 42.9 / 60.9 / 63.4 | ~42 (re-timed) |" in rows["| `old`"]
    assert "| 0.5500 (4) | - | - | 50 |" in rows["| `timed`"]  # its own recorded wall time wins
    assert "| 2 langs, 3-7 ways, + afrisenti episodes (25%) |" in rows["| `timed`"]
