"""The main job on the embedded defaults (``make demo`` / ``xmeta demo``).

1. resolve both default models (cache, hub, or the PyPI packages that carry them);
2. load SIB-200;
3. meta-train a LoRA-adapted multilingual-e5-small with ProtoNet episodes on high-resource
   languages (``recipes/configs/demo.yaml``, a few minutes);
4. benchmark it against frozen-encoder prototypes and the in-context baseline (gemma-3-270m)
   on identical 7-way 5-shot episodes of three low-resource languages; print the table and
   write a plot.

Every stage is resumable: re-running skips finished work.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

DEMO_LANGS = ["swh_Latn", "yor_Latn", "hau_Latn"]


def _say(stream: TextIO, msg: str) -> None:
    stream.write(msg + "\n")
    stream.flush()


def run_demo(data_dir: str | None = None, out: str | Path = "runs/demo", stream: TextIO = sys.stdout) -> int:
    from xmeta.artifacts import has_manifest
    from xmeta.bench.config import BenchConfig
    from xmeta.bench.report import failed_cells
    from xmeta.bench.runner import run_bench
    from xmeta.data import load_task, resolve_data_dir
    from xmeta.models.zoo import cached_entries, resolve_model
    from xmeta.recipes_index import config_path, recipe_path

    out = Path(out)
    t_start = time.perf_counter()
    _say(stream, "== 1/4 default models")
    for name in ("multilingual-e5-small", "gemma-3-270m"):
        t = time.perf_counter()
        path = resolve_model(name)
        entry = cached_entries()[name]
        _say(
            stream,
            f"   {name}: {path} ({entry['bytes'] / 1e6:.0f} MB, from {entry['source']}, {time.perf_counter() - t:.1f}s)",
        )

    _say(stream, "== 2/4 data")
    t = time.perf_counter()
    root = resolve_data_dir(data_dir)
    data = str(root) if root else None  # None: the Davlan/sib200 hub dataset (online only)
    sib = load_task("sib200", data_dir=data)
    langs = sorted(set(sib["lang"]))
    _say(
        stream,
        f"   SIB-200 from {root or 'the hub'}: {len(sib):,} sentences, {len(langs)} languages ({time.perf_counter() - t:.1f}s)",
    )

    _say(stream, "== 3/4 meta-training (ProtoNet over LoRA, high-resource languages; recipes/configs/demo.yaml)")
    run_dir = out / "train"
    if has_manifest(run_dir / "final"):
        _say(stream, f"   already trained: {run_dir / 'final'}")
    else:
        import runpy

        recipe = runpy.run_path(str(recipe_path("meta_train")), run_name="xmeta_recipe")
        argv = ["--config", str(config_path("demo")), f"output_dir={run_dir}"]
        argv += [f"data.data_dir={data}"] if data else []
        if (run_dir / "checkpoints" / "latest").is_file():
            argv.append("--resume")
        t = time.perf_counter()
        recipe["main"](argv)
        _say(stream, f"   trained in {time.perf_counter() - t:.0f}s -> {run_dir / 'final'}")
    card = (run_dir / "final" / "README.md").read_text(encoding="utf-8")
    val = [line for line in card.splitlines() if "meta-validation accuracy" in line]
    _say(stream, f"   {val[0].lstrip('- ') if val else ''}")

    _say(stream, f"== 4/4 benchmark on {', '.join(DEMO_LANGS)} (7-way 5-shot, identical episodes for every method)")
    cfg = BenchConfig(
        task="sib200",
        langs=DEMO_LANGS,
        methods=["frozen-proto", f"meta:{run_dir / 'final'}", "icl:gemma-3-270m"],
        n_way=7,
        k_shot=[5],
        q_query=3,
        episodes_per_lang=2,
        seed=0,
        on_small_class="shrink",
        data_dir=data,
        out=str(out / "bench"),
        bootstrap=1000,
    )
    t = time.perf_counter()
    results = run_bench(cfg)
    _say(stream, f"   benchmark done in {time.perf_counter() - t:.0f}s\n")
    _say(stream, (out / "bench" / "results.md").read_text(encoding="utf-8"))
    plots = sorted((out / "bench").glob("*.png"))
    _say(stream, f"plots: {', '.join(map(str, plots))}")
    _say(stream, f"demo finished in {time.perf_counter() - t_start:.0f}s; outputs in {out}")
    failed = failed_cells(results)
    if failed:  # a table with holes is not a finished demo: say so, and exit 1 like `xmeta bench`
        sys.stderr.write(
            f"xmeta demo: {len(failed)} benchmark cell(s) failed ({', '.join(failed)}; errors in "
            f"{out / 'bench' / 'results.md'}); rerun the same command to retry only those\n"
        )
        return 1
    return 0
