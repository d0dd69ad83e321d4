"""Write a benchmark's outputs: results.json, results.md (Markdown tables) and the PNG plots.

results.md shows accuracy in percent as ``mean ± half-width`` of the 95% bootstrap interval (the
exact, possibly asymmetric interval is in results.json), one table per K with languages as rows
and methods as columns, then cost, failures, and - separately and labelled as other protocols -
the published SIB-200 numbers for the same languages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xmeta.bench.config import BenchConfig
from xmeta.bench.published import COLUMNS, find_published, load_published
from xmeta.bench.store import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def per_k(results: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``{K: results object}`` for single- and multi-K results alike."""
    if "by_k" in results:
        return dict(results["by_k"])
    return {str(results["k_shot"]): results}


def failed_cells(results: Mapping[str, Any]) -> list[str]:
    """``"<method> K=<K> <lang>"`` for every cell of the run that failed (empty when all finished)."""
    return [
        f"{name} K={k} {lang}"
        for k, res in per_k(results).items()
        for name, m in res["methods"].items()
        for lang in m["failed"]
    ]


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _cell(acc: float | None, ci: list[float] | None) -> str:
    if acc is None:
        return "–"
    if not ci:
        return _pct(acc)
    return f"{_pct(acc)} ± {100 * (ci[1] - ci[0]) / 2:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _k_section(k: str, res: Mapping[str, Any]) -> list[str]:
    methods = res["methods"]
    names = list(methods)
    header = ["language"] + [methods[m]["display"] for m in names]
    rows = []
    for lang in res["langs"]:
        row = [lang]
        for m in names:
            s = methods[m]["per_lang"].get(lang, {})
            row.append("failed" if s.get("status") == "failed" else _cell(s.get("accuracy"), s.get("ci95")))
        rows.append(row)
    mean_row = ["**mean**"]
    f1_row = ["macro-F1 (mean)"]
    for m in names:
        r = methods[m]
        mark = "" if r["complete"] else f" ({r['n_langs']}/{len(res['langs'])} langs)†"
        if r.get("scored_on") == "answered queries only":
            mark += " (answered queries only)"
        mean_row.append(f"**{_cell(r['mean_accuracy'], r['mean_ci95'])}**{mark}")
        f1_row.append(_pct(r["mean_macro_f1"]))
    out = [f"## K = {k}", ""] + _table(header, rows + [mean_row, f1_row]) + [""]
    if any(not methods[m]["complete"] for m in names):
        out += ["† mean over the languages where the method did not fail (see Failures).", ""]
    cost_rows = []
    fmt = lambda v, spec: "–" if v is None else format(v, spec)  # noqa: E731
    for m in names:
        c = methods[m]["cost"]
        cost_rows.append(
            [
                methods[m]["display"],
                fmt(c.get("seconds_per_episode"), ".3f"),
                fmt(c.get("ms_per_query"), ".2f"),
                fmt(c.get("peak_rss_mb"), ".0f"),
                fmt(c.get("load_seconds"), ".1f"),
                fmt(methods[m].get("coverage") and 100 * methods[m]["coverage"], ".1f"),
                _tokens(c),
            ]
        )
    out += [f"Cost and coverage (K = {k})", ""]
    header = ["method", "s / episode (adapt+predict)", "ms / query (predict)", "peak RSS (MB)", "load (s)"]
    out += _table(header + ["coverage (%)", "LLM tokens / episode (prompt + completion; requests, cached)"], cost_rows)
    failures = [(m, lang, err) for m in names for lang, err in methods[m]["failed"].items()]
    if failures:
        out += ["", f"Failures (K = {k})", ""] + [f"- `{m}` on {lang}: {err}" for m, lang, err in failures]
    return out + [""]


def _tokens(cost: Mapping[str, Any]) -> str:
    """Server-backed LLM usage per episode, e.g. ``61,250 + 245 (245 req, 0 cached)``; ``–`` otherwise."""
    if cost.get("requests_per_episode") is None:
        return "–"
    return (
        f"{cost['prompt_tokens_per_episode']:,.0f} + {cost['completion_tokens_per_episode']:,.0f} "
        f"({cost['requests_per_episode']:.0f} req, {cost['cached_per_episode']:.0f} cached)"
    )


def _vs_k_section(results: Mapping[str, Any]) -> list[str]:
    ks = per_k(results)
    first = next(iter(ks.values()))
    header = ["method"] + [f"K = {k}" for k in ks]
    rows = [
        [first["methods"][m]["display"]]
        + [_cell(ks[k]["methods"][m]["mean_accuracy"], ks[k]["methods"][m]["mean_ci95"]) for k in ks]
        for m in first["methods"]
    ]
    return ["## Mean accuracy vs K", ""] + _table(header, rows) + [""]


def _published_section(pub: Mapping[str, Any]) -> list[str]:
    cols = [c for c in COLUMNS if any(v.get(c) is not None for v in pub["per_lang"].values())]
    header = ["language", "in XLM-R"] + [COLUMNS[c] for c in cols]
    rows = [
        [lang, "yes" if pub["in_xlmr"].get(lang) else "no"] + [("–" if v[c] is None else f"{v[c]:.1f}") for c in cols]
        for lang, v in pub["per_lang"].items()
    ]
    rows.append(["**mean**", ""] + [("–" if pub["mean"][c] is None else f"**{pub['mean'][c]:.1f}**") for c in cols])
    out = ["## Published SIB-200 numbers (other protocols, not our episodes)", "", pub["note"], ""]
    out += _table(header, rows)
    if pub["missing_langs"]:
        out += ["", f"No published numbers for: {', '.join(pub['missing_langs'])}."]
    return out + ["", f"Source: `{pub['source']}` (accuracy, %)."]


def render_markdown(results: Mapping[str, Any]) -> str:
    """The results.md text of a results object."""
    ks = per_k(results)
    first = next(iter(ks.values()))
    lines = [
        f"# xmeta benchmark: {first['task']}, {first['n_way']}-way, K = {', '.join(ks)}, Q = {first['q_query']}",
        "",
        f"{first['episodes_per_lang']} episodes per language and K, seed {first['seed']}; support from "
        f"`{first['support_split']}`, queries from `{first['query_split']}`; every method ran on the same episodes "
        "(their uids are in results.json).",
        "Cells: accuracy (%) ± half-width of the 95% percentile-bootstrap interval over episodes; the mean row "
        "weights languages equally, its interval resamples episodes within each language (stratified).",
        "",
    ]
    for k, res in ks.items():
        lines += _k_section(k, res)
    if len(ks) > 1:
        lines += _vs_k_section(results)
    leak = results.get("leakage_check") or {}
    if leak:
        lines += ["Leakage check (meta-trained methods vs every query):", ""]
        lines += [f"- `{m}`: {s}" for m, s in leak.items()] + [""]
    if results.get("published_other_protocols"):
        lines += _published_section(results["published_other_protocols"])
    return "\n".join(lines).rstrip() + "\n"


def write_outputs(results: dict[str, Any], cfg: BenchConfig, out: Path) -> None:
    """Add the published numbers (SIB-200 only), then write results.json, results.md and plots."""
    if cfg.published and cfg.task == "sib200":
        path = find_published(cfg.data_dir)
        if path is not None:
            results["published_other_protocols"] = load_published(path, cfg.langs)
        else:
            log.info("no %s found; the published-numbers table is left out", "published_results.csv")
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", render_markdown(results))
    if cfg.plots:
        from xmeta.bench.plots import write_plots

        for path in write_plots(results, out):
            log.info("wrote %s", path)
