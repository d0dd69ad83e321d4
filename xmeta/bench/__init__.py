"""The benchmark harness: methods side by side on identical few-shot episodes.

Public API::

    cfg = load_config(BenchConfig, "eval/configs/smoke.yaml", ["k_shot=1,5"])
    results = run_bench(cfg)                     # writes results.json / results.md / PNGs to cfg.out
    register_method("knn", build)                # plug a Learner under a method name
    bootstrap_ci(values), stratified_bootstrap_ci({lang: values})
    load_metric("accuracy" | "macro_f1")         # evaluate modules shipped in xmeta (offline)
"""

from __future__ import annotations

from xmeta.bench.config import BenchConfig
from xmeta.bench.methods import (
    METHODS,
    BuildContext,
    MethodInfo,
    MethodSpec,
    build_learner,
    describe_method,
    parse_method,
    register_method,
)
from xmeta.bench.metrics import load_metric
from xmeta.bench.runner import run_bench
from xmeta.bench.stats import bootstrap_ci, stratified_bootstrap_ci

__all__ = [
    "METHODS",
    "BenchConfig",
    "BuildContext",
    "MethodInfo",
    "MethodSpec",
    "bootstrap_ci",
    "build_learner",
    "describe_method",
    "load_metric",
    "parse_method",
    "register_method",
    "run_bench",
    "stratified_bootstrap_ci",
]
