"""Constant memory of ``xmeta predict``: peak RSS and sentences/s on generated files of growing size.

    python eval/perf/predict_memory.py                          # 10k and 100k lines
    python eval/perf/predict_memory.py --lines 10000 100000 1000000 --precision bf16 --threads 2

Adapts the shipped ``meta:default`` to a 7-way 5-shot support set (evaluation episode 0 of
``--support-lang``: support from dev) and saves it, then writes plain-text files of N lines: real
SIB-200 test sentences of the ``eval:lowres25`` languages, repeated and shuffled (seeded). Each
file is classified by ``xmeta predict --input FILE --output OUT`` in a child process; its peak RSS
is that child's ``ru_maxrss`` (``os.wait4``), so model loading is included and nothing of this
process counts. Streaming input and output make the peak independent of N: the 1M-line row should
match the 10k one. Run on an idle machine; writes ``eval/results/perf/predict_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import ROOT, data_dir, eval_episode  # noqa: E402  (eval/perf/common.py)

OUT = ROOT / "eval" / "results" / "perf" / "predict_memory.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, nargs="+", default=[10_000, 100_000], help="file sizes in lines")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of the child (default: all)")
    p.add_argument("--support-lang", default="swh_Latn")
    p.add_argument("--langs", default="eval:lowres25", help="where the sentences come from (test splits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="for the model and files (default: a temp dir)")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def write_lines(path: Path, pool: list[str], n: int, seed: int) -> None:
    """``n`` lines drawn from ``pool``: whole shuffled copies, then a shuffled remainder (one line at a time)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        left = n
        while left > 0:
            block = pool[:]
            rng.shuffle(block)
            for text in block[:left]:
                f.write(text.replace("\n", " ") + "\n")
            left -= min(left, len(block))


def run_predict(model: Path, src: Path, dst: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join([str(ROOT),
           os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-m", "xmeta.cli", "predict", "--model", str(model), "--input", str(src), "--output",
           str(dst), "--precision", args.precision, "--batch-size", str(args.batch_size), "--no-resume"]  # fmt: skip
    log = dst.with_suffix(".stderr")
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        # wait4, not Popen.wait: the child's own rusage (ru_maxrss), not an aggregate over children
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"xmeta predict failed on {src}:\n{log.read_text(encoding='utf-8')[-2000:]}")
    log.unlink()
    out_lines = sum(1 for _ in open(dst, encoding="utf-8"))
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "output_lines": out_lines}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import xmeta

    pool = _all(args.langs)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xmeta-predict-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    support, _ = eval_episode(args.support_lang, 7, 5, 1, args.seed)
    model = xmeta.adapt([(e.text, e.label_name) for e in support], "default", lang=args.support_lang).save(
        work / "model"
    )
    rows = []
    for n in args.lines:
        src = work / f"in_{n}.txt"
        write_lines(src, pool, n, args.seed)
        r = run_predict(model, src, work / f"out_{n}.jsonl", args)
        if r["output_lines"] != n:
            raise SystemExit(f"{src}: {n} lines in, {r['output_lines']} out")
        r.update(lines=n, input_mb=round(src.stat().st_size / 2**20, 1), sentences_per_s=round(n / r["seconds"], 1))
        print(json.dumps(r), flush=True)
        rows.append(r)
        src.unlink()
        (work / f"out_{n}.jsonl").unlink()
    result = {
        "what": "xmeta predict --output on N-line plain-text files: peak RSS of the child (ru_maxrss, model "
        "load included) and sentences/s over the whole run (model load included)",
        "precision": args.precision,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "sentences": f"SIB-200 test sentences of {args.langs}, repeated and shuffled (seed {args.seed}); "
        f"{len(pool)} distinct",
        "rows": rows,
        "peak_rss_growth_mb": round(rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"], 1) if rows else None,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
        "loadavg": os.getloadavg(),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


def _all(langs: str) -> list[str]:
    """Every test sentence of ``langs`` (a set name or codes)."""
    from xmeta.data.languages import expand_languages
    from xmeta.data.readers import read_rows

    return [r.values[0] for c in expand_languages(langs)
            for r in read_rows(data_dir() / "sib200" / "annotated" / c / "test.tsv", ["text"])]  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
