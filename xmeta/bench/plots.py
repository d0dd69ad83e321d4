"""PNG plots of a benchmark: per-language accuracy with intervals, and mean accuracy vs K."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xmeta.errors import writing


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display (CI, servers)
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt: Any, fig: Any, path: Path) -> Path:
    """Save and close ``fig``; atomically, so an interrupted or refused save leaves no broken PNG."""
    try:
        with writing(path, atomic=True) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path


def _err(acc: float | None, ci: list[float] | None) -> tuple[float, float, float]:
    if acc is None:
        return np.nan, 0.0, 0.0
    lo, hi = ci if ci else (acc, acc)
    return 100 * acc, 100 * max(acc - lo, 0.0), 100 * max(hi - acc, 0.0)


def plot_per_language(res: Mapping[str, Any], path: Path) -> Path:
    """Accuracy per language (and the mean) with 95% intervals, one marker series per method."""
    plt = pyplot()
    langs = list(res["langs"]) + ["mean"]
    methods = res["methods"]
    x = np.arange(len(langs))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(langs) * max(1, len(methods)) ** 0.5 + 2), 4.5))
    for i, m in enumerate(methods.values()):
        points = [
            _err(m["per_lang"].get(lang, {}).get("accuracy"), m["per_lang"].get(lang, {}).get("ci95"))
            for lang in res["langs"]
        ]
        points.append(_err(m["mean_accuracy"], m["mean_ci95"]))
        y, lo, hi = (np.array(v) for v in zip(*points))
        ax.errorbar(x - 0.4 + width * (i + 0.5), y, yerr=[lo, hi], fmt="o", ms=4, capsize=2, label=m["display"])
    ax.axhline(100.0 / res["n_way"], color="grey", lw=0.8, ls="--", label=f"chance (1/{res['n_way']})")
    ax.set_xticks(x, langs, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(
        f"{res['task']}: {res['n_way']}-way {res['k_shot']}-shot, {res['episodes_per_lang']} episodes/lang, 95% CI"
    )
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(plt, fig, path)


def plot_vs_k(by_k: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Mean accuracy over languages against K, with the stratified 95% intervals."""
    plt = pyplot()
    ks = sorted(by_k, key=int)
    first = by_k[ks[0]]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, m in first["methods"].items():
        points = [_err(by_k[k]["methods"][name]["mean_accuracy"], by_k[k]["methods"][name]["mean_ci95"]) for k in ks]
        y, lo, hi = (np.array(v) for v in zip(*points))
        ax.errorbar([int(k) for k in ks], y, yerr=[lo, hi], marker="o", capsize=3, label=m["display"])
    ax.axhline(100.0 / first["n_way"], color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks([int(k) for k in ks])
    ax.set_xlabel("K (support examples per class)")
    ax.set_ylim(0, 100)
    ax.set_ylabel("mean accuracy over languages (%)")
    ax.set_title(f"{first['task']}: {first['n_way']}-way, {len(first['langs'])} languages")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(plt, fig, path)


def write_plots(results: Mapping[str, Any], out: Path) -> list[Path]:
    """``accuracy_by_lang_k<K>.png`` per K, plus ``accuracy_vs_k.png`` when there are several K."""
    from xmeta.bench.report import per_k

    ks = per_k(results)
    paths = [plot_per_language(res, out / f"accuracy_by_lang_k{k}.png") for k, res in ks.items()]
    if len(ks) > 1:
        paths.append(plot_vs_k(ks, out / "accuracy_vs_k.png"))
    return paths
