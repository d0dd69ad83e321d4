"""PNG plots of a benchmark: per-language accuracy with intervals, and mean accuracy vs K."""

from __future__ import annotations

import re
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
            fig.savefig(tmp, dpi=120, bbox_inches="tight")  # legends placed beside the axes stay in
    finally:
        plt.close(fig)
    return path


def short_label(display: str) -> str:
    """A method's display name without the directories of its runs (``meta:eval/results/meta_runs/x`` -> ``meta:x``)."""
    return re.sub(r"(?<=[:+])[^:+\s()]*/", "", display)


def _styles(plt: Any, n: int) -> list[dict[str, Any]]:
    """Distinct colour + marker pairs for ``n`` series (the default cycle repeats its 10 colours)."""
    colors = plt.get_cmap("tab10" if n <= 10 else "tab20")(np.arange(n) % (10 if n <= 10 else 20))
    markers = "osD^vP*Xh<>p"
    return [{"color": colors[i], "marker": markers[i % len(markers)]} for i in range(n)]


def _legend_beside(ax: Any, source: Any = None) -> None:
    """``ax``'s legend (or ``source``'s entries) to the right of ``ax``; ``save_figure`` keeps it in the PNG."""
    handles, labels = (source or ax).get_legend_handles_labels()
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


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
    # Wider with more languages and methods, up to a page-wide 20 inches (beyond that a PNG is unreadable).
    fig, ax = plt.subplots(figsize=(min(20.0, max(6.0, 0.45 * len(langs) * max(1, len(methods)) ** 0.5 + 2)), 4.5))
    styles = _styles(plt, len(methods))
    for i, m in enumerate(methods.values()):
        points = [
            _err(m["per_lang"].get(lang, {}).get("accuracy"), m["per_lang"].get(lang, {}).get("ci95"))
            for lang in res["langs"]
        ]
        points.append(_err(m["mean_accuracy"], m["mean_ci95"]))
        y, lo, hi = (np.array(v) for v in zip(*points))
        ax.errorbar(x - 0.4 + width * (i + 0.5), y, yerr=[lo, hi], ls="none", ms=3 if len(methods) > 8 else 4, capsize=1,
                    label=short_label(m["display"]), **styles[i])  # fmt: skip
    ax.axhline(100.0 / res["n_way"], color="grey", lw=0.8, ls="--", label=f"chance (1/{res['n_way']})")
    ax.set_xticks(x, langs, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(
        f"{res['task']}: {res['n_way']}-way {res['k_shot']}-shot, {res['episodes_per_lang']} episodes/lang, 95% CI"
    )
    _legend_beside(ax)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(plt, fig, path)


def plot_vs_k(by_k: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Mean accuracy over languages against K, with the stratified 95% intervals: every method on the
    full scale, and beside it a close-up of the methods within 2 points of the best at some K (where
    the close ones overlap on the full scale)."""
    plt = pyplot()
    ks = sorted(by_k, key=int)
    first = by_k[ks[0]]
    names = list(first["methods"])
    acc = {n: [by_k[k]["methods"][n]["mean_accuracy"] for k in ks] for n in names}
    best = [max((a[i] for a in acc.values() if a[i] is not None), default=0.0) for i in range(len(ks))]
    close = [n for n in names if any(a is not None and a >= b - 0.02 for a, b in zip(acc[n], best))]
    zoom = 1 < len(close) < len(names)
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(11.0 if zoom else 5.5, 4.5), squeeze=False)
    styles = dict(zip(names, _styles(plt, len(names))))
    for ax, shown in zip(axes[0], (names, close)):
        for name in shown:
            m = by_k[ks[0]]["methods"][name]
            points = [
                _err(by_k[k]["methods"][name]["mean_accuracy"], by_k[k]["methods"][name]["mean_ci95"]) for k in ks
            ]
            y, lo, hi = (np.array(v) for v in zip(*points))
            ax.errorbar([int(k) for k in ks], y, yerr=[lo, hi], capsize=3, ms=5, label=short_label(m["display"]),
                        **styles[name])  # fmt: skip
        ax.set_xticks([int(k) for k in ks])
        ax.set_xlabel("K (support examples per class)")
        ax.set_ylabel("mean accuracy over languages (%)")
        ax.grid(alpha=0.3)
    axes[0][0].axhline(100.0 / first["n_way"], color="grey", lw=0.8, ls="--", label="chance")
    axes[0][0].set_ylim(0, 100)
    axes[0][0].set_title(f"{first['task']}: {first['n_way']}-way, {len(first['langs'])} languages")
    if zoom:
        axes[0][1].set_title("close-up: within 2 points of the best at some K", fontsize=10)
    # One legend for both panels (every method and chance, from the full-scale panel), beside the last.
    _legend_beside(axes[0][-1], source=axes[0][0])
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
