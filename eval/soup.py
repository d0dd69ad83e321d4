"""Average the meta-learned tensors of several artifacts of one model layout (a uniform "model soup").

Weight averaging of solutions from the same initialisation (checkpoints along one run, or runs
that share the seed and hence the LoRA / projection init) tends to generalise better under
distribution shift than any single member (Wortsman et al., 2022, "Model soups"; Izmailov et al.,
2018, SWA). Members are meta-run artifacts (``best/``, ``final/``, a copy in
``eval/results/meta_runs/``) or resumable checkpoints (``checkpoints/step-N``), each verified
against its digests; the soup is written as a meta artifact with the configs and training record of
the first published member, so ``meta:<out>`` and ``xmeta adapt --model <out>`` load it. Choose soups by the meta-validation languages, never by the evaluation languages.

    python eval/soup.py runs/soup runs/protonet_hr50/final runs/protonet_hr50/checkpoints/step-00000800
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from xmeta.artifacts import CARD, ArtifactError, open_artifact
from xmeta.artifacts.training_data import training_data_of
from xmeta.errors import XmetaError
from xmeta.meta import MetaModel
from xmeta.meta.checkpoint import configs_of, load_params, save_meta_model
from xmeta.models.encoder import Encoder


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
    p.add_argument("members", type=Path, nargs="+", help="meta-trained artifacts, runs or checkpoints (verified)")
    args = p.parse_args(argv)
    try:
        manifests = [open_artifact(m, "meta") for m in args.members]
    except ArtifactError as err:
        raise SystemExit(f"soup: {err}") from None
    first = next((m for m in manifests if m.kind == "meta"), None)
    if first is None:
        raise SystemExit("soup: at least one member must be a published artifact (final/ or best/), not a checkpoint")
    tensors = average([load_params(m) for m in manifests], args.members)
    # Written like any meta artifact (manifest, digests, peft export) with the first's layout.
    enc_cfg, meta_cfg = configs_of(first)
    model = MetaModel(Encoder.from_config(enc_cfg), meta_cfg)
    model.load_meta_state_dict(tensors)
    members = [str(m) for m in args.members]
    body = (
        (first.root / CARD).read_text(encoding="utf-8").split("\n---\n", 1)[-1] if (first.root / CARD).is_file() else ""
    )
    note = "\n".join(
        ["", "## Model soup", "", "Uniform average of the meta-learned tensors of:", ""] + [f"- `{m}`" for m in members]
    )
    try:
        save_meta_model(model, args.out, training=training_data_of(first), step=first.step, info={"soup": members},
                        card=body + note + "\n")  # fmt: skip
    except XmetaError as err:
        raise SystemExit(f"soup: {err}") from None
    print(f"soup of {len(args.members)} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
