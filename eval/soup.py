"""Average the meta-learned tensors of several artifacts of one model layout (a uniform "model soup").

Weight averaging of solutions from the same initialisation (checkpoints along one run, or runs
that share the seed and hence the LoRA / projection init) tends to generalise better under
distribution shift than any single member (Wortsman et al., 2022, "Model soups"; Izmailov et al.,
2018, SWA). Members are meta-run artifacts (``best/``, ``final/``, a copy in
``eval/results/meta_runs/``) or resumable checkpoints (``checkpoints/step-N``); the soup is written
as an artifact in the first member's format, so ``meta:<out>`` and ``xmeta adapt --model <out>``
load it. Choose soups by the meta-validation languages, never by the evaluation languages.

    python eval/soup.py runs/soup runs/protonet_hr50/final runs/protonet_hr50/checkpoints/step-00000800
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from xmeta.config import from_dict
from xmeta.training.artifact import peft_adapter
from xmeta.training.config import TrainConfig

PARAMS = "meta_params.safetensors"  # an artifact's tensors
CKPT_PARAMS = "params.safetensors"  # a resumable checkpoint's tensors


def member_tensors(path: Path) -> dict[str, torch.Tensor]:
    for name in (PARAMS, CKPT_PARAMS):
        if (path / name).is_file():
            return load_file(path / name)
    raise SystemExit(f"soup: {path} holds neither {PARAMS} (an artifact) nor {CKPT_PARAMS} (a checkpoint)")


def average(members: list[dict[str, torch.Tensor]], names: list[Path]) -> dict[str, torch.Tensor]:
    keys = set(members[0])
    for m, name in zip(members[1:], names[1:]):
        if set(m) != keys:
            diff = sorted(keys ^ set(m))[:3]
            raise SystemExit(f"soup: {name} has other tensors than {names[0]} (e.g. {diff}); same layout needed")
        for k in keys:
            if m[k].shape != members[0][k].shape:
                raise SystemExit(f"soup: {name}: {k} has shape {tuple(m[k].shape)}, not {tuple(members[0][k].shape)}")
    return {k: torch.stack([m[k].double() for m in members]).mean(0).to(members[0][k].dtype) for k in sorted(keys)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="directory to write the soup artifact to")
    p.add_argument(
        "members", type=Path, nargs="+", help="artifact dirs; the first must be an artifact (its files are copied)"
    )
    args = p.parse_args(argv)
    first = args.members[0]
    if not (first / PARAMS).is_file():
        raise SystemExit(f"soup: the first member must be an artifact with {PARAMS}: {first}")
    tensors = average([member_tensors(m) for m in args.members], args.members)
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(first, args.out)
    save_file(tensors, str(args.out / PARAMS))
    training = args.out / "training.json"
    if (args.out / "adapter").is_dir() and training.is_file():  # the peft export must hold the soup, too
        cfg = from_dict(TrainConfig, json.loads(training.read_text(encoding="utf-8"))["config"])
        peft_adapter(tensors, cfg, args.out / "adapter")
    meta_path = args.out / "xmeta_meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["soup"] = [str(m) for m in args.members]
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    readme = args.out / "README.md"
    if readme.is_file():
        note = "\n".join(["", "## Model soup", "", "Uniform average of the meta-learned tensors of:", ""]
                         + [f"- `{m}`" for m in args.members])  # fmt: skip
        readme.write_text(readme.read_text(encoding="utf-8") + note + "\n", encoding="utf-8")
    print(f"soup of {len(args.members)} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
