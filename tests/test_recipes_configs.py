"""The shipped configs (recipes/configs, eval/configs): their effective values, names, comments and --print-config.

The configs are short deltas over bases (``extends:``) with named language sets (``tier:high``).
``tests/data/effective_configs.json`` holds the effective config of every shipped config
(``to_dict(load_config(cls, path, []))``): a YAML edit must change no effective value except those
listed in ``INTENDED_CHANGES``, each with its reason. A later, deliberate change to a config
updates that file or this list in the same commit. History: first dumped before the configs were
composed (issue 16, commit a0b4c63); re-dumped for issue 17 after checking that the only
differences were the new fields at their defaults (``meta.inner_lr_shape``,
``meta.multi_step_loss_steps``, ``meta.first_order_until``, ``data.n_way_min``, ``data.aux_*``), the rename of the
head-only ProtoMAML config to ``protomaml_head.yaml`` (``output_dir: runs/protomaml_head``; maml.yaml
extends it and is unchanged), and the new configs. Issue 18 added ``activation_cache_dir: null`` (the new
TrainConfig field at its default) to every recipes/configs entry; nothing else changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from xmeta.bench.config import BenchConfig
from xmeta.cli import main as xmeta_main
from xmeta.config import load_config, to_dict
from xmeta.data.languages import high_resource_languages
from xmeta.recipes_index import config_description, config_recipe, configs_dir, list_configs
from xmeta.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
BEFORE = json.loads((ROOT / "tests" / "data" / "effective_configs.json").read_text(encoding="utf-8"))

# Configs renamed since the record was dumped (new path -> path in the record).
RENAMED: dict[str, str] = {}
# The only effective values that changed since the record was dumped (path -> dotted key -> new value).
INTENDED_CHANGES: dict[str, dict[str, Any]] = {
    # Issue 17: sized to the run that produced eval/results/meta_runs/protomaml_hr50 (LoRA inner loops
    # make each validation ~6 min, so validation every 50 steps with patience 3 over 250 steps).
    "recipes/configs/protomaml_hr50.yaml": {"max_steps": 250, "val_every": 50, "patience": 3},
    # Issue 17: second-order MAML++ sized the same way (1,000 episodes, validation every 50 steps).
    "recipes/configs/mamlpp_hr50.yaml": {"max_steps": 250, "val_every": 50, "patience": 3},
    # Issue 17: first-order MAML at scale sized the same way, so the three MAML-family runs compare.
    "recipes/configs/fomaml_hr50.yaml": {"max_steps": 250, "val_every": 50, "patience": 3},
    # Issue 17: the AfriSenti mixture experiment extends protonet_hr50_xl_short.yaml (cross-lingual, 250
    # steps), so that a committed run is its baseline, as the new protonet_hr50_ways.yaml does.
    "recipes/configs/protonet_hr50_mix.yaml": {
        "max_steps": 250,
        "val_every": 25,
        "checkpoint_every": 25,
        "data.cross_lingual": True,
    },
}


def shipped() -> list[tuple[str, type]]:
    """Every shipped config (bases such as recipes/configs/_base.yaml are not runs) and its dataclass."""
    recipes = [(p, TrainConfig) for p in sorted((ROOT / "recipes" / "configs").glob("*.yaml"))]
    evals = [(p, BenchConfig) for p in sorted((ROOT / "eval" / "configs").glob("*.yaml"))]
    return [(str(p.relative_to(ROOT)), cls) for p, cls in recipes + evals if not p.name.startswith("_")]


def expected(path: str) -> dict[str, Any]:
    values = json.loads(json.dumps(BEFORE[RENAMED.get(path, path)]))  # a deep copy
    for dotted, value in INTENDED_CHANGES.get(path, {}).items():
        *parents, key = dotted.split(".")
        node = values
        for part in parents:
            node = node[part]
        assert node[key] != value, f"{path}: {dotted} is already {value!r}; drop it from INTENDED_CHANGES"
        node[key] = value
    return values


def test_every_shipped_config_is_in_the_record():
    assert sorted(RENAMED.get(p, p) for p, _ in shipped()) == sorted(BEFORE)


@pytest.mark.parametrize(("path", "cls"), shipped(), ids=[p for p, _ in shipped()])
def test_effective_values_are_unchanged_but_for_the_intended_changes(path, cls):
    assert to_dict(load_config(cls, ROOT / path)) == expected(path)


def test_the_50_high_resource_languages_are_the_committed_runs_languages():
    # protonet_hr50*.yaml say `train_langs: tier:high`: the list the committed runs (and the shipped
    # model) trained on, in the same order (which fixes their episodes).
    for run in (
        "eval/results/meta_runs/protonet_hr50",
        "eval/results/meta_runs/protonet_hr50_xl",
        "xmeta/assets/default",
    ):
        trained = json.loads((ROOT / run / "training.json").read_text(encoding="utf-8"))["config"]["data"][
            "train_langs"
        ]
        assert trained == high_resource_languages(), run
    for name in ("protonet_hr50", "protonet_hr50_xl", "protonet_hr50_xl_short"):
        text = (configs_dir() / f"{name}.yaml").read_text(encoding="utf-8")
        assert "zsm_Latn" not in text  # named, never pasted


def test_shared_values_are_written_once():
    texts = [p.read_text(encoding="utf-8") for p in (ROOT / "recipes" / "configs").glob("*.yaml")]
    for line in ("lora_top_layers: 4", "projection_dim: 256", "target_modules: [query, value]"):
        assert sum(line in t for t in texts) == 1, line


@pytest.mark.parametrize("name", list_configs())
def test_opening_comment_is_a_sentence_with_the_launch_command(name):
    # `xmeta recipes list` shows the first line: a whole sentence, not the start of one.
    description = config_description(name)
    assert description[:1].isupper() and description.endswith("."), description
    assert config_recipe(name) == "meta_train"


@pytest.mark.parametrize("name", list_configs())
def test_print_config_shows_the_effective_config_without_training(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a training run would write runs/ here
    assert xmeta_main(["train", "--config", name, "--print-config", "seed=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    path = str((configs_dir() / f"{name}.yaml").relative_to(ROOT))
    assert shown == {**expected(path), "seed": 7}  # the file over its bases, then the overrides
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written


def test_print_config_of_a_bad_override_is_the_usual_error(capsys):
    assert xmeta_main(["train", "--config", "protonet", "--print-config", "data.train_langs=tier:hihg"]) == 2
    err = capsys.readouterr().err
    assert "Unknown language set 'tier:hihg'. Did you mean 'tier:high'" in err
