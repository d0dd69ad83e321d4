"""Recipes and configs by name: resolution, `xmeta recipes`, `xmeta train --recipe/--config NAME`."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmeta.cli import main as xmeta_main
from xmeta.commands import train as train_command
from xmeta.errors import InputError
from xmeta.recipes_index import (
    config_description,
    config_path,
    config_recipe,
    configs_dir,
    list_configs,
    list_recipes,
    recipe_path,
    recipes_dir,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (ROOT / "recipes" / "configs").glob("*.yaml") if not p.name.startswith("_"))


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """Run from a directory outside the checkout, as a pip-install user would."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_checkout_recipes_are_the_installed_ones():
    # `make venv` installs xmeta editable: the package xmeta.recipes is the top-level recipes/ directory.
    assert recipes_dir().resolve() == (ROOT / "recipes").resolve()
    assert configs_dir() == recipes_dir() / "configs"


def test_lists_every_recipe_and_config():
    assert "meta_train" in list_recipes() and "__init__" not in list_recipes()
    assert list_configs() == CONFIGS and {"protomaml", "protonet", "demo", "tiny"} <= set(CONFIGS)
    assert "default" not in CONFIGS  # "default" is the shipped model (meta:default), not a config
    assert list_configs("meta_train") == CONFIGS  # every config launches meta_train
    assert list_configs("no_such_recipe") == []


@pytest.mark.parametrize("arg", ["protonet", "protonet.yaml"])
def test_config_name_resolves_to_the_packaged_file(elsewhere, arg):
    assert config_path(arg) == configs_dir() / "protonet.yaml"
    assert config_path(arg).is_file()


@pytest.mark.parametrize("arg", ["meta_train", "meta_train.py"])
def test_recipe_name_resolves_to_the_packaged_file(elsewhere, arg):
    assert recipe_path(arg) == recipes_dir() / "meta_train.py"


def test_paths_still_work(elsewhere):
    mine = elsewhere / "configs" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_text("max_steps: 3\n", encoding="utf-8")
    assert config_path(str(mine)) == mine
    assert config_path("configs/mine.yaml") == Path("configs/mine.yaml")
    assert recipe_path(ROOT / "recipes" / "meta_train.py") == ROOT / "recipes" / "meta_train.py"


def test_a_local_file_wins_over_the_packaged_file_name_but_not_over_the_bare_name(elsewhere):
    (elsewhere / "protonet.yaml").write_text("max_steps: 3\n", encoding="utf-8")  # an edited copy
    assert config_path("protonet.yaml") == Path("protonet.yaml")
    assert config_path("protonet") == configs_dir() / "protonet.yaml"


def test_a_base_is_not_listed_but_resolves_by_name(elsewhere):
    assert (configs_dir() / "_base.yaml").is_file() and "_base" not in list_configs()
    assert config_path("_base") == configs_dir() / "_base.yaml"  # what `extends: _base` in a copied config finds
    with pytest.raises(InputError) as err:
        config_path("_bsae")
    assert "_base" not in str(err.value)  # never suggested: it is not a run


def test_unknown_config_name_lists_the_available_ones(elsewhere):
    with pytest.raises(InputError) as err:
        config_path("protonett")
    msg = str(err.value)
    assert "Unknown config 'protonett'" in msg and "Did you mean 'protonet'" in msg
    assert all(name in msg for name in CONFIGS) and "\n" not in msg


def test_unknown_recipe_name_lists_the_available_ones(elsewhere):
    with pytest.raises(
        InputError, match=r"Unknown recipe 'meta_trian'.*Did you mean 'meta_train'.*Known: .*meta_train"
    ):
        recipe_path("meta_trian")


def test_missing_path_is_not_looked_up_by_name(elsewhere):
    with pytest.raises(InputError, match=r"^config file not found: configs/protonet.yaml$"):
        config_path("configs/protonet.yaml")
    with pytest.raises(InputError, match=r"^recipe file not found: my/recipe.py$"):
        recipe_path("my/recipe.py")


def test_descriptions_and_recipes_come_from_the_opening_comment():
    first = (ROOT / "recipes" / "configs" / "protonet.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert config_description("protonet") == first.lstrip("# ")
    assert config_recipe("protonet") == "meta_train"


def test_description_is_empty_without_an_opening_comment(monkeypatch, tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "bare.yaml").write_text("max_steps: 3\n# not an opening comment\n", encoding="utf-8")
    monkeypatch.setattr("xmeta.recipes_index.recipes_dir", lambda: tmp_path)
    assert list_configs() == ["bare"]
    assert config_description("bare") == "" and config_recipe("bare") is None


def test_recipes_list_prints_each_recipe_with_its_configs(elsewhere, capsys):
    assert xmeta_main(["recipes", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["RECIPE", "CONFIG", "DESCRIPTION"]
    body = lines[1 : lines.index("")]
    assert body[0].startswith("meta_train  ") and all(row.startswith(" ") for row in body[1:])
    configs = [row.split()[1] if i == 0 else row.split()[0] for i, row in enumerate(body)]
    assert configs == CONFIGS
    for name, row in zip(configs, body):
        assert row.endswith(f"  {config_description(name)}"), row
    assert f"files: {recipes_dir()}" in lines
    assert "run: xmeta train --recipe RECIPE --config CONFIG [key=value ...]" in lines


def test_recipes_path_prints_the_file(elsewhere, capsys):
    assert xmeta_main(["recipes", "path", "protonet"]) == 0
    assert xmeta_main(["recipes", "path", "meta_train"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        str(configs_dir() / "protonet.yaml"),
        str(recipes_dir() / "meta_train.py"),
    ]
    assert xmeta_main(["recipes", "path", "protonett"]) == 2
    assert "Unknown recipe or config 'protonett'. Did you mean 'protonet'" in capsys.readouterr().err
    assert xmeta_main(["recipes", "path", "slurm/meta_train.sbatch"]) == 0  # a shipped file (SLURM launcher)
    assert capsys.readouterr().out.strip() == str(recipes_dir() / "slurm" / "meta_train.sbatch")
    assert xmeta_main(["recipes", "path", "../pyproject.toml"]) == 2  # never outside the recipes


@pytest.fixture
def ran(monkeypatch) -> list[list[str]]:
    """Stands in for the recipe: records the argv `xmeta train` hands it (no torch, no training)."""
    calls: list[list[str]] = []

    def fake_run_path(path: str, run_name: str) -> dict:
        assert run_name == "xmeta_recipe"
        return {"main": lambda argv: calls.append([path, *argv]) or 0}

    monkeypatch.setattr(train_command.runpy, "run_path", fake_run_path)
    return calls


@pytest.mark.parametrize("config", ["protonet", "protonet.yaml"])
def test_train_config_name_runs_the_packaged_config(elsewhere, ran, config):
    assert xmeta_main(["train", "--config", config, "max_steps=1", "output_dir=out"]) == 0
    recipe = str(recipes_dir() / "meta_train.py")
    assert ran == [[recipe, "--config", str(configs_dir() / "protonet.yaml"), "max_steps=1", "output_dir=out"]]


def test_train_recipe_by_name_and_by_path(elsewhere, ran):
    assert xmeta_main(["train", "--recipe", "meta_train", "--resume"]) == 0
    assert xmeta_main(["train", "--recipe", str(ROOT / "recipes" / "meta_train.py")]) == 0
    assert ran == [[str(recipes_dir() / "meta_train.py"), "--resume"], [str(ROOT / "recipes" / "meta_train.py")]]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", "protonett"], "Unknown config 'protonett'. Did you mean 'protonet'"),
        (["--config", "nope/protonet.yaml"], "config file not found: nope/protonet.yaml"),
        (["--recipe", "meta_trian"], "Unknown recipe 'meta_trian'. Did you mean 'meta_train'"),
    ],
)
def test_train_unknown_name_is_a_one_line_error(elsewhere, ran, capsys, args, expected):
    assert xmeta_main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"xmeta train: error: {expected}") and err.count("\n") == 1
    assert ran == []  # nothing ran


def test_help_teaches_names(capsys):
    for command in (["train"], ["recipes"], []):
        with pytest.raises(SystemExit):
            xmeta_main([*command, "--help"])
    out = capsys.readouterr().out
    assert "xmeta recipes list" in out and "--config protonet" in out and "NAME|FILE" in out
    assert "recipes" in out.split("positional arguments")[-1]  # listed among the commands
