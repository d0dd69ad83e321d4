"""``xmeta recipes``: the recipes and configs that ship with xmeta (like torchtune's ``tune ls``)."""

from __future__ import annotations

import argparse
import sys

from xmeta.commands import add_command

DESCRIPTION = (
    "The training recipes and their YAML configs ship inside xmeta. Run one by name: "
    "`xmeta train --recipe meta_train --config protonet key=value ...`."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "recipes", "list the shipped training recipes and their configs", DESCRIPTION)
    rsub = p.add_subparsers(dest="recipes_command", metavar="ACTION", required=True)
    ls = rsub.add_parser("list", help="each recipe, its configs and their one-line descriptions")
    ls.set_defaults(func=_list)
    pa = rsub.add_parser(
        "path",
        help="print the file of a recipe or config (to launch, copy or read it)",
        description="Print the file of a shipped recipe or config, e.g. to copy a config and edit it, or to "
        "launch a recipe on several processes: "
        "accelerate launch --num_processes 2 $(xmeta recipes path meta_train) --config $(xmeta recipes path protonet)",
    )
    pa.add_argument(
        "name",
        metavar="NAME",
        help="a recipe (meta_train), a config (protonet) or a shipped file (slurm/meta_train.sbatch)",
    )
    pa.set_defaults(func=_path)


def _list(args: argparse.Namespace) -> int:
    from xmeta.recipes_index import config_description, config_recipe, list_configs, list_recipes, recipes_dir

    rows: list[tuple[str, str, str]] = []
    for recipe in list_recipes():
        configs = list_configs(recipe) or ["-"]
        for i, config in enumerate(configs):
            rows.append((recipe if i == 0 else "", config, config_description(config) if config != "-" else ""))
    orphans = [c for c in list_configs() if config_recipe(c) not in list_recipes()]
    rows += [("-" if i == 0 else "", c, config_description(c)) for i, c in enumerate(orphans)]
    rows.insert(0, ("RECIPE", "CONFIG", "DESCRIPTION"))
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    out = [f"{r:<{w0}}  {c:<{w1}}  {d}".rstrip() for r, c, d in rows]
    out += ["", f"files: {recipes_dir()}", "run: xmeta train --recipe RECIPE --config CONFIG [key=value ...]"]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _path(args: argparse.Namespace) -> int:
    from xmeta.errors import InputError
    from xmeta.recipes_index import configs_dir, list_configs, list_recipes, recipes_dir
    from xmeta.registry import did_you_mean

    if (name := args.name.removesuffix(".py")) in list_recipes():
        path = recipes_dir() / f"{name}.py"
    elif (name := args.name.removesuffix(".yaml")) in list_configs():
        path = configs_dir() / f"{name}.yaml"
    elif ".." not in args.name and (recipes_dir() / args.name).is_file():  # a shipped file: slurm/meta_train.sbatch
        path = recipes_dir() / args.name
    else:
        raise InputError(did_you_mean(args.name, list_recipes() + list_configs(), "recipe or config"))
    sys.stdout.write(f"{path}\n")
    return 0
