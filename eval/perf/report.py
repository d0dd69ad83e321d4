"""``perf.md`` from the ``perf.json`` report of ``eval/perf/run.py``."""

from __future__ import annotations


def _f(x, digits: int = 3, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}{unit}"
    return f"{x}{unit}"


def render_markdown(report: dict) -> str:
    m = report["machine"]
    res = report["measurements"]
    lines = [
        "# xmeta performance benchmark",
        "",
        f"{'QUICK (smoke) run: small episodes, one timed episode each -- not for reporting.' if report['quick'] else 'Full run.'}"
        f" Started {report['started']}, finished {report['finished']}.",
        "",
        "## Machine",
        "",
        f"- CPU: {m.get('cpu_model')} ({m.get('logical_cpus')} logical CPUs, {m.get('physical_cores')} cores; "
        f"flags {', '.join(m.get('cpu_flags', [])) or '-'})",
        f"- torch {m['torch']} (threads per measurement: {m['threads']}), transformers {m['transformers']}, "
        f"peft {m.get('peft')}, higher {m.get('higher')}, Python {m['python']}",
        f"- {m['platform']}; load average before {tuple(round(x, 2) for x in m['load_average_before'])}, "
        f"after {tuple(round(x, 2) for x in m['load_average_after'])} (a load above the thread count means "
        "other jobs shared the cores: timings are then inflated)",
    ]
    for name, when in (("matmul", "first"), ("matmul_end", "last")):
        mm = res.get(name, {})
        if "fp32" in mm:
            lines.append(
                f"- dense matmul, measured {when}: fp32 {mm['fp32']['gflops']} GFLOP/s, bf16 {mm['bf16']['gflops']} "
                f"GFLOP/s (by shape: fp32 {mm['fp32'].get('by_shape')}, bf16 {mm['bf16'].get('by_shape')})"
            )
    if any(name in res for name in ("matmul", "matmul_end")):
        lines.append("- every fraction of peak below divides by the better of the two at its precision")
    lines += ["", "## Targets", "", "| target | value | goal | met | definition |", "|---|---|---|---|---|"]
    for name, d in report["targets_detail"].items():
        met = {True: "yes", False: "**no**", None: "-"}[d["met"]]
        lines.append(f"| `{name}` | {_f(d['value'])} | {d['target']} | {met} | {d['definition']}; by setting: "
                     f"{d['by_setting']} |")  # fmt: skip
    lines += [
        "",
        "## Meta-training episodes",
        "",
        "Median seconds per episode (meta_step_loss + backward + AdamW step). MFU: model FLOPs (real tokens, "
        "no recomputation) / s / dense matmul FLOP/s at that precision; HFU: FLOPs executed (padding and "
        "recomputation included). Peak RSS: ru_maxrss of the measurement's own process; episode peak: "
        "high-water mark while episodes ran (model resident). The warm-up episode's loss is computed before any "
        "optimizer step with the same weights everywhere: cached runs store bf16 activations (~1e-4 relative), "
        "bf16 runs compute under autocast (~1e-3).",
        "",
        "| measurement | s/episode | episodes/s | MFU | HFU | GFLOP/episode (model) | peak RSS MB | episode peak MB "
        "| real / padded tokens | loss (warm-up episode; rel. diff vs uncached fp32) | cache fill ms/example |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        if name in ("matmul", "matmul_end", "icl", "icl_bf16", "icl_flops") or name.startswith(
            ("latency/", "predict/", "cache_fill/")
        ):
            continue
        if "error" in r:
            lines.append(f"| {name} | error: {r['error'][-120:].replace('|', '/').replace(chr(10), ' ')} |" + " |" * 9)
            continue
        fill = r.get("cache", {}).get("fill_ms_per_example")
        lines.append(
            f"| {name} | {_f(r.get('seconds_per_episode'))} | {_f(r.get('episodes_per_s'), 2)} | {_f(r.get('mfu'), 2)} "
            f"| {_f(r.get('hfu'), 2)} | {_f((r.get('flops_model') or 0) / 1e9 or None, 1)} | {_f(r.get('peak_rss_mb'), 0)} "
            f"| {_f(r.get('episode_peak_rss_mb'), 0)} | {_f(r.get('real_tokens'), 0)} / {_f(r.get('padded_tokens'), 0)} "
            f"| {_f(r.get('first_loss'), 5)}"
            + (f" ({r['first_loss_rel_diff_vs_uncached']:.1e})" if "first_loss_rel_diff_vs_uncached" in r else "")
            + f" | {_f(fill, 1)} |"
        )
    lines += ["", "## Adaptation and prediction latency", "", "| method | adapt s | s/query (one call per query) "
              "| s/query (all queries in one call) | notes |", "|---|---|---|---|---|"]  # fmt: skip
    for name, r in res.items():
        if name.startswith("latency/"):
            if "error" in r:
                lines.append(f"| {name} | error | | | {r['error'][-120:]} |")
                continue
            lines.append(f"| meta-learned encoder ({name.split('/')[1]}: {r.get('meta')}) | {_f(r.get('adapt_seconds'))} "
                         f"| {_f(r.get('query_seconds_single'), 4)} | {_f(r.get('query_seconds_batched'), 4)} "
                         f"| {r.get('support')} support, {r.get('queries')} queries, {r.get('precision')} |")  # fmt: skip
    for name in ("icl", "icl_bf16"):
        icl = res.get(name)
        if not icl:
            continue
        if "error" in icl:
            lines.append(f"| ICL ({name}) | error | | | {icl['error'][-120:]} |")
            continue
        lines.append(f"| ICL gemma-3-270m (prefix KV cache, {icl.get('dtype', 'float32')}) "
                     f"| {_f(icl.get('prefix_plus_first_query_seconds'))} (prefix {icl.get('prefix_tokens')} tokens + "
                     f"first query) | {_f(icl.get('query_seconds_single'), 3)} | {_f(icl.get('query_seconds_batched'), 3)} "
                     f"| {icl.get('queries')} queries |")  # fmt: skip
    flops = res.get("icl_flops")
    if flops and "error" not in flops:
        lines += ["", f"Model FLOPs per query (FlopCounterMode, {flops.get('queries')} queries): encoder "
                  f"{_f((flops.get('encoder_flops_per_query') or 0) / 1e9 or None, 2)} GFLOP, ICL "
                  f"{flops.get('icl_model')} {_f((flops.get('icl_flops_per_query') or 0) / 1e9 or None, 2)} GFLOP "
                  f"(ratio {_f(flops.get('flop_ratio_icl_over_encoder'), 1)}): the most the ICL / encoder time per "
                  "query can be at equal FLOP/s."]  # fmt: skip
    lines += _predict_section(res)
    for name in ("cache_fill/bf16", "cache_fill/fp32"):
        lines += _cache_fill_line(res.get(name))
    lines += ["", "Every number is in `perf.json` (`measurements`, `targets`, `targets_detail`).", ""]
    return "\n".join(lines)


def _predict_section(res: dict) -> list[str]:
    rows = {n: r for n, r in res.items() if n.startswith("predict/")}
    if not rows:
        return []
    lines = [
        "",
        "## Prediction throughput (`xmeta predict`)",
        "",
        "Sentences/s over SIB-200 test sentences of languages never trained on (best of the timed passes). "
        "xmeta: `meta:default` adapted to a 7-way 5-shot support set, `xmeta predict`'s code path (chunks, "
        "token-length-sorted batches (the backbone's padded layers when a batch is nearly padding-free, else packed layers), JSON lines). plain HF: `AutoModel` from the cached directory, batches "
        "of 64 in input order, padded, mean pooling. Floor fraction: model FLOPs per sentence (FlopCounterMode, "
        "real tokens) x sentences/s / dense matmul FLOP/s at that precision; floor: the sentences/s at that peak.",
        "",
        "| measurement | sentences | sentences/s | floor sentences/s | floor fraction | GFLOP/sentence "
        "| tokens/sentence | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error'][-120:].replace('|', '/').replace(chr(10), ' ')} |" + " |" * 6)
            continue
        gflop = r.get("flops_per_sentence") or r.get("flops_executed_per_sentence")
        lines.append(f"| {name} | {r.get('sentences')} | {_f(r.get('sentences_per_s'), 1)} "
                     f"| {_f(r.get('floor_sentences_per_s'), 1)} | {_f(r.get('floor_fraction'), 2)} "
                     f"| {_f((gflop or 0) / 1e9 or None, 2)}{'' if r.get('flops_per_sentence') else ' (executed)'} "
                     f"| {_f(r.get('real_tokens_per_sentence'), 1)} | {_f(r.get('peak_rss_mb'), 0)} |")  # fmt: skip
    return lines


def _cache_fill_line(r: dict | None) -> list[str]:
    """The activation-cache fill (eval/perf/cache_fill.py): one example at a time against tiles."""
    if not r:
        return []
    if "error" in r:
        return ["", f"Activation-cache fill: error: {r['error'][-200:]}"]
    ms = r.get("ms_per_example", {})
    per_episode = r.get("per_episode_speedup")
    return ["", f"Activation-cache fill ({r.get('examples')} examples of {r.get('episodes')} meta-training episodes, "
            f"{r.get('model')}, layers below {r.get('first_trainable_layer')}, max_length {r.get('max_length')}, "
            f"{r.get('precision')} fills, {r.get('storage')} storage): one example at a time "
            f"{_f(ms.get('one_at_a_time'), 2)} ms/example, fixed-shape tiles {_f(ms.get('tiled'), 2)} ms/example "
            f"(speed-up {_f(r.get('cache_fill_speedup'), 2)}"
            + ("" if per_episode is None else f"; {_f(per_episode, 2)} when filled episode by episode")
            + f"); stored values apart by at most {_f(r.get('max_diff_bf16_ulps'), 2)} bf16 ulps."]  # fmt: skip
