"""The wheel ships the recipes and their configs as ``xmeta.recipes`` (and no top-level ``recipes``)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def test_pyproject_lists_every_package():
    # package-dir (recipes/ -> xmeta.recipes) rules out packages.find, so pyproject lists packages by hand.
    from setuptools import find_namespace_packages

    listed = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    found = find_namespace_packages(where=str(ROOT), include=["xmeta*"], exclude=["*__pycache__*"])
    found += ["xmeta.recipes", "xmeta.recipes.configs", "xmeta.recipes.slurm"]
    missing = sorted(set(found) - set(listed))
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert sorted(set(listed) - set(found)) == []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built (no deps, no isolation: offline) from a copy of the files git sees."""
    tmp = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "pyproject.toml", "README.md",
         "xmeta", "recipes"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    with tarfile.open(tmp / "src.tar", "w") as tar:  # a copy: setuptools writes build/ next to the sources
        for name in filter(None, files):
            if (ROOT / name).is_file():
                tar.add(ROOT / name, arcname=name)
    with tarfile.open(tmp / "src.tar") as tar:
        tar.extractall(tmp / "src", filter="data")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
         str(tmp / "src")],
        check=True, capture_output=True,
    )  # fmt: skip
    (built,) = (tmp / "dist").glob("xmeta-*.whl")
    return built


def test_wheel_carries_the_recipes_and_every_config(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert zf.read("xmeta/recipes/meta_train.py") == (ROOT / "recipes" / "meta_train.py").read_bytes()
        for config in (ROOT / "recipes" / "configs").glob("*.yaml"):
            assert zf.read(f"xmeta/recipes/configs/{config.name}") == config.read_bytes()
    assert "xmeta/recipes/__init__.py" in names and "xmeta/recipes_index.py" in names
    assert not [n for n in names if n.startswith("recipes/")]  # no generic top-level `recipes` package
    configs = {n for n in names if n.startswith("xmeta/recipes/configs/")}
    assert len(configs) == len(list((ROOT / "recipes" / "configs").glob("*.yaml")))


def test_installed_wheel_finds_its_own_recipes(wheel, tmp_path):
    """Unpacked like pip installs it, outside the checkout: names resolve inside the installed package."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    code = (
        "import xmeta; from xmeta.recipes_index import config_path, recipe_path, list_configs; "
        "print(xmeta.__file__); print(recipe_path('meta_train')); print(config_path('protonet')); "
        "print(len(list_configs()))"
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    init, recipe, config, n = out.stdout.split()
    assert Path(init) == site / "xmeta" / "__init__.py"
    assert Path(recipe) == site / "xmeta" / "recipes" / "meta_train.py"
    assert Path(config) == site / "xmeta" / "recipes" / "configs" / "protonet.yaml"
    assert int(n) == len([p for p in (ROOT / "recipes" / "configs").glob("*.yaml") if not p.name.startswith("_")])
    listing = subprocess.run(
        [sys.executable, "-m", "xmeta.cli", "recipes", "list"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert listing.returncode == 0, listing.stderr
    assert f"files: {site / 'xmeta' / 'recipes'}" in listing.stdout and "meta_train  demo" in listing.stdout
    assert " protomaml  " in listing.stdout and "_base" not in listing.stdout  # a base is extended, not listed
    # A config three bases deep (protonet_hr50_xl_short -> ... -> _base) resolves inside the installed package.
    shown = subprocess.run(
        [sys.executable, "-m", "xmeta.cli", "train", "--config", "protonet_hr50_xl_short", "--print-config"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "lora_top_layers: 4" in shown.stdout and "cross_lingual: true" in shown.stdout and "zsm_Latn" in shown.stdout
