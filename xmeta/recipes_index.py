"""Where the recipes and their configs live: the only place in xmeta that knows.

The repository's top-level ``recipes/`` directory is installed as the package ``xmeta.recipes``
(pyproject's ``package-dir``): a wheel carries ``xmeta/recipes/meta_train.py`` and
``xmeta/recipes/configs/*.yaml``, and an editable install maps the same package name onto the
checkout's ``recipes/``. Recipes are looked up by short name (``meta_train``), configs by name
(``protonet`` or ``protonet.yaml``) or by path. Torch-free, so ``xmeta recipes list`` is instant.

A config whose name starts with ``_`` (``_base.yaml``) is a base that others extend
(``extends: _base``, see ``xmeta.config``), not a run of its own: it is not listed, but it resolves
by name like any packaged config.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from xmeta.errors import InputError
from xmeta.registry import did_you_mean

# A source checkout that is not installed (e.g. PYTHONPATH=.) has no ``xmeta.recipes`` package.
_CHECKOUT_RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# House style: every config opens with the command that launches it, e.g. `python recipes/meta_train.py`.
_LAUNCHED_RECIPE = re.compile(r"recipes/(\w+)\.py\b")


def recipes_dir() -> Path:
    """The directory holding the recipe files (its ``configs/`` holds their YAML configs)."""
    # find_spec locates the package without executing it, in a wheel and in an editable install alike.
    spec = importlib.util.find_spec("xmeta.recipes")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return _CHECKOUT_RECIPES


def configs_dir() -> Path:
    """The directory of the packaged YAML configs."""
    return recipes_dir() / "configs"


def list_recipes() -> list[str]:
    """Names of the packaged recipes (``meta_train``), sorted."""
    return sorted(p.stem for p in recipes_dir().glob("*.py") if not p.name.startswith("_"))


def list_configs(recipe: str | None = None) -> list[str]:
    """Names of the packaged configs (``protonet``), sorted; only those of ``recipe`` when given.

    Bases (``_base``) are left out: they are extended, not run.
    """
    names = sorted(p.stem for p in configs_dir().glob("*.yaml") if not p.name.startswith("_"))
    return [n for n in names if recipe is None or config_recipe(n) == recipe]


def recipe_path(name_or_path: str | Path) -> Path:
    """The file of a recipe given by name (``meta_train``, ``meta_train.py``) or by path.

    Raises:
        InputError: no such file, or an unknown name (the message lists the known ones).
    """
    return _resolve(str(name_or_path), recipes_dir(), (".py",), list_recipes(), "recipe")


def config_path(name_or_path: str | Path) -> Path:
    """The YAML file of a config given by name (``protonet``, ``protonet.yaml``) or by path.

    A bare name is always the packaged config; ``protonet.yaml`` is a file in the working directory
    when there is one (an edited copy), else the packaged config.

    Raises:
        InputError: no such file, or an unknown name (the message lists the known ones).
    """
    bases = tuple(p.stem for p in configs_dir().glob("_*.yaml"))  # resolvable by name, never suggested
    return _resolve(str(name_or_path), configs_dir(), (".yaml", ".yml"), list_configs(), "config", bases)


def config_description(name: str) -> str:
    """The first line of a packaged config's opening comment ('' when it has none)."""
    for line in (configs_dir() / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if text := line.lstrip("#").strip():
            return text
    return ""


def config_recipe(name: str) -> str | None:
    """The recipe a packaged config's opening comment launches (None when it names none)."""
    for line in (configs_dir() / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if match := _LAUNCHED_RECIPE.search(line):
            return match.group(1)
    return None


def _resolve(
    arg: str, root: Path, suffixes: tuple[str, ...], known: list[str], kind: str, unlisted: tuple[str, ...] = ()
) -> Path:
    name = next((arg[: -len(s)] for s in suffixes if arg.endswith(s)), arg)
    if arg == name and (name in known or name in unlisted):  # a bare name is always the packaged one
        return root / f"{name}{suffixes[0]}"
    path = Path(arg).expanduser()
    if path.is_file():
        return path
    if "/" in arg or "\\" in arg:  # meant as a path: a name never contains a separator
        raise InputError(f"{kind} file not found: {arg}")
    if name not in known and name not in unlisted:
        raise InputError(f"{did_you_mean(name, known, kind)} Or pass the path of a {kind} file.")
    return root / f"{name}{suffixes[0]}"
