"""One timed check of xmeta on a GPU: meta-training, `xmeta predict` throughput and the ICL scorer.

    PYTHONPATH=. timeout 470 python eval/gpu/check.py --out gpu_check.json          # on the GPU machine
    PYTHONPATH=. python eval/gpu/check.py --device cpu --tiny --out /tmp/check.json  # anywhere, seconds

It reads the bundle written by ``eval/gpu/prepare.py`` (configs, gzipped tokenizers, SIB-200 TSVs,
episodes), builds multilingual-e5-small and gemma-3-270m from their configs with RANDOM weights
(saved to a work directory, then loaded by xmeta's own loaders: right for speed, never for
accuracy), and runs the parts of ``parts.PARTS`` through xmeta's code paths: ProtoNet, FOMAML and
second-order MAML meta-training steps in bf16 (s/episode, peak memory), ``xmeta predict``'s loop
(sentences/s) and the ``icl:`` learner with its prefix KV cache (s/episode). ``--tiny`` shrinks
both architectures (2 layers, hidden 64) and the work so that the whole check takes seconds on a
CPU (tests/test_gpu_check.py runs it so).

Time: every part has a budget (``BUDGETS``); a part stops starting steps when the next would not
fit, and a SIGALRM at its budget ends it (status ``timeout``, figures of the finished steps kept).
``--budget`` caps the whole run, start-up included: a part gets no more than what is left. The
JSON is rewritten after every part, so a run killed from outside (``timeout``) leaves what it
finished (``"complete": false``). Exit status: 0 when every part is ``ok``, 3 otherwise.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # before the heavy imports: start-up counts against the budget

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# xmeta from this working tree (whatever is installed), then eval/perf/common.py and parts.py.
sys.path[:0] = [str(ROOT), str(ROOT / "eval" / "perf"), str(HERE)]

import torch  # noqa: E402

logger = logging.getLogger("eval.gpu.check")

# Seconds per part on the GPU: 425 s with set-up, under the 8 minutes of a device run with `timeout 470`.
BUDGETS = {"setup": 60, "protonet": 55, "fomaml": 65, "maml": 100, "predict": 50, "icl": 75}
TINY_BUDGETS = {"setup": 60, "protonet": 30, "fomaml": 30, "maml": 40, "predict": 30, "icl": 40}
# --tiny: the same architectures, shrunk; vocabularies stay so that the real tokenizers fit.
TINY_ENCODER = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}
TINY_LM = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1,
           "head_dim": 32, "intermediate_size": 128, "layer_types": ["sliding_attention", "full_attention"]}  # fmt: skip
FLOORS = ("torch", "transformers", "peft", "accelerate")  # checked against pyproject.toml's floors


class PartTimeout(Exception):
    """A part ran past its budget (raised by SIGALRM in the main thread)."""


def _alarm(signum, frame):  # noqa: ARG001
    raise PartTimeout


def run_part(name: str, fn, budget: float, rec: dict) -> None:
    """``fn(until)`` under a SIGALRM at ``budget`` seconds; fills ``rec['status']`` and ``rec['wall_s']``."""
    start = time.perf_counter()
    rec.update(status="running", budget_s=round(budget, 1))
    if budget <= 1:
        rec.update(status="skipped", reason="no time left in --budget", wall_s=0.0)
        return
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        fn(start + budget)
        rec["status"] = "ok"
    except PartTimeout:
        rec["status"] = "timeout"
        logger.warning("%s: ran out of its %.0f s", name, budget)
    except Exception as err:  # one failing part must not cost the others' figures
        rec.update(status="error", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-3000:])
        logger.error("%s failed: %s", name, err)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        rec["wall_s"] = round(time.perf_counter() - start, 3)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ---- set-up: versions, random-weight models, bundle -----------------------------------------------


def check_versions() -> dict[str, str | None]:
    """Installed versions; raises naming the package when one is below pyproject.toml's floor."""
    from packaging.version import Version

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    versions = {p: _version(p) for p in (*FLOORS, "tokenizers", "safetensors", "numpy")}
    for pkg in FLOORS:
        m = re.search(rf'"{pkg}>=([\w.]+)"', text)
        have = versions[pkg]
        if m and have is not None and Version(have.split("+")[0]) < Version(m.group(1)):
            raise RuntimeError(f"{pkg} {have} is older than xmeta's floor {m.group(1)}: pip install --no-deps "
                               "eval/gpu/bundle/wheels/*.whl (eval/gpu/prepare.py --wheels), then rerun")  # fmt: skip
    return versions


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def materialise(src: Path, out: Path, *, causal: bool, tiny: bool, device: torch.device) -> Path:
    """A HF model directory at ``out``: ``src``'s config (shrunk if ``tiny``) with random weights, its tokenizer."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(src)
    if tiny:
        for key, value in (TINY_LM if causal else TINY_ENCODER).items():
            setattr(config, key, value)
    torch.manual_seed(0)
    with torch.device(device):  # initialise where it is fast; saved from there
        if causal:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device.type == "cuda" else None)
        else:
            model = AutoModel.from_config(config, add_pooling_layer=False)  # the Encoder never uses BERT's pooler
    model.save_pretrained(out)
    del model
    for name in ("tokenizer_config.json", "generation_config.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    with gzip.open(src / "tokenizer.json.gz", "rb") as f, open(out / "tokenizer.json", "wb") as g:
        shutil.copyfileobj(f, g)
    return out


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": props.name, "capability": f"{props.major}.{props.minor}",
                "total_memory_mib": round(props.total_memory / 2**20), "count": torch.cuda.device_count(),
                "bf16": torch.cuda.is_bf16_supported()}  # fmt: skip
    return {"type": device.type, "name": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}  # fmt: skip


def setup(args: argparse.Namespace, report: dict, work: Path):
    from parts import Context, episode_from_dict

    report["versions"] = {"python": platform.python_version(), "cuda": torch.version.cuda,
                          "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
                          **check_versions()}  # fmt: skip
    import xmeta

    report["versions"]["xmeta"] = f"{xmeta.__version__} ({Path(xmeta.__file__).parent})"
    bundle = args.bundle
    if not (bundle / "bundle.json").is_file():
        raise FileNotFoundError(f"{bundle}: no bundle.json; run eval/gpu/prepare.py here first and carry the bundle")
    made = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    report["bundle"] = {"path": str(bundle), "total_mb": made["total_mb"], "made_with": made["versions"]}
    models = bundle / "models"
    enc = materialise(models / "multilingual-e5-small", work / "encoder", causal=False, tiny=args.tiny,
                      device=args.device)  # fmt: skip
    lm = materialise(models / "gemma-3-270m", work / "lm", causal=True, tiny=args.tiny, device=args.device)
    data = json.loads((bundle / "episodes.json").read_text(encoding="utf-8"))
    train = [episode_from_dict(e) for e in data["meta_train"]["episodes"]]
    evals = {lang: [episode_from_dict(e) for e in v["episodes"]] for lang, v in data["eval"].items()}
    overrides = ["encoder.max_length=32"] if args.tiny else []
    return Context(args.device, args.tiny, bundle, enc, lm, train, evals, args.steps, overrides)


# ---- the report -------------------------------------------------------------------------------------


def write_report(path: Path, report: dict) -> None:
    """Atomically (a reader, or a kill from outside, never sees half a file)."""
    from parts import FIGURES

    figures = {}
    for part, keys in FIGURES.items():
        rec = report["parts"].get(part, {})
        figures.update({f"{part}.{k}": rec[k] for k in keys if isinstance(rec.get(k), (int, float))})
    report["figures"] = figures
    report["wall_s"] = round(time.perf_counter() - T0, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from parts import PARTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=HERE / "bundle", help="from prepare.py (default: eval/gpu/bundle)")
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON report")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--tiny", action="store_true", help="shrunk models and work: a CPU run in seconds (the test)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default: sum of parts)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument(
        "--steps", type=int, default=None, help="timed steps per part: outer steps, ICL episodes (10; tiny 2)"
    )
    p.add_argument("--work", type=Path, default=None, help="where the random-weight models go (default: a temp dir)")
    args = p.parse_args(argv)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device")
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        p.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    budgets = TINY_BUDGETS if args.tiny else BUDGETS
    args.budgets = {k: v for k, v in budgets.items() if k == "setup" or k in args.parts}
    args.budget = args.budget or sum(args.budgets.values())
    args.steps = args.steps or (2 if args.tiny else 10)
    gpu = args.device.type == "cuda"
    args.options = {
        # xmeta predict's default batch size (64) in both precisions, and a larger batch where it pays.
        "predict_runs": [("bf16", 64), ("fp32", 64), ("bf16", 256)] if gpu else [("fp32", 64)],
        "predict_texts": 64 if args.tiny else 4096,
        "predict_seconds": 0.2 if args.tiny else 3.0,
        "icl_dtype": "bfloat16" if gpu else "float32",
        "icl_queries": 7 if args.tiny else None,  # tiny: one query per class
    }
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per weight file saved and loaded: noise in a log
    from parts import PARTS

    deadline = T0 + args.budget
    report: dict = {
        "check": "xmeta gpu check",
        "complete": False,
        "device": device_info(args.device),
        "settings": {
            "tiny": args.tiny,
            "budget_s": args.budget,
            "budgets_s": args.budgets,
            "steps": args.steps,
            "parts": args.parts,
            "options": args.options,
        },  # fmt: skip
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "startup_s": round(time.perf_counter() - T0, 3),
        "parts": {},
    }
    work = args.work or Path(tempfile.mkdtemp(prefix="xmeta-gpu-check-"))
    box: dict = {}
    try:
        for name, budget in args.budgets.items():
            rec = report["parts"].setdefault(name, {})
            budget = min(budget, deadline - time.perf_counter())
            if name == "setup":
                run_part(name, lambda until: box.update(ctx=setup(args, report, work)), budget, rec)
            elif "ctx" not in box:
                rec.update(status="skipped", reason="set-up failed", wall_s=0.0)
            else:
                run_part(name, lambda until, n=name, r=rec: PARTS[n](box["ctx"], r, until, args.options), budget, rec)
            write_report(args.out, report)
            logger.info("%s: %s in %.1f s", name, rec["status"], rec["wall_s"])
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report["complete"] = all(r.get("status") == "ok" for r in report["parts"].values())
    write_report(args.out, report)
    logger.info("wrote %s: %s", args.out, json.dumps(report["figures"]))
    return 0 if report["complete"] else 3


if __name__ == "__main__":
    sys.exit(main())
