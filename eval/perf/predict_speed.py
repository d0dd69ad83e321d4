"""Prediction throughput of an adapted classifier (``xmeta predict``'s code path) and of the plain peer.

Run by ``eval/perf/run.py`` through ``measure.py`` (kinds ``predict`` and ``plain_hf``):

- ``predict``: the shipped ``meta:default`` adapted to a 7-way 5-shot support set (evaluation
  episode 0 of ``support_lang``: support from dev), then ``write_predictions`` -- what
  ``xmeta predict`` runs after loading: chunks, length-sorted packed batches, JSON lines -- over
  ``sentences`` SIB-200 test sentences of languages the project never trains on (the
  ``eval:lowres25`` test splits, interleaved). FLOPs: ``FlopCounterMode`` over the same
  computation (``predictor.predict`` on real tokens), per sentence.
- ``plain_hf``: the same sentences through ``transformers.AutoModel`` loaded from the cached model
  directory, the way a user would write it: batches of 64 in input order, padded, mean pooling;
  its passes alternate with passes of ``xmeta predict`` at xmeta's default inference precision
  (``interleaved``), so that ``predict_vs_plain_hf`` compares passes taken under the same load.

The floor fraction (``run.py``) is FLOPs per sentence x sentences/s / the measured matmul peak.
"""

from __future__ import annotations

import io
import time

import torch
from common import count_flops, data_dir, eval_episode, rss_peak_mb  # eval/perf/common.py


def sib200_test_sentences(langs: str | list[str], n: int) -> list[str]:
    """``n`` test sentences interleaved across ``langs`` (a set name such as ``eval:lowres25`` or codes)."""
    from xmeta.data.languages import expand_languages
    from xmeta.data.readers import read_rows

    codes = expand_languages(langs)
    per_lang = [[r.values[0] for r in read_rows(data_dir() / "sib200" / "annotated" / c / "test.tsv", ["text"])]
                for c in codes]  # fmt: skip
    out = [s for row in zip(*per_lang) for s in row]  # one of each language in turn
    if len(out) < n:
        raise SystemExit(f"only {len(out)} test sentences in {codes}; lower predict.sentences")
    return out[:n]


def adapted_predictor(spec: dict, precision: str):
    """``meta:default`` (or ``spec['model']``) adapted to a 7x5 support set of ``support_lang``."""
    import xmeta

    support, _ = eval_episode(spec["support_lang"], spec["n_way"], spec["k_shot"], 1, spec["seed"])
    pairs = [(e.text, e.label_name) for e in support]
    return xmeta.adapt(pairs, spec.get("model", "default"), lang=spec["support_lang"], batch_size=spec["batch_size"],
                       precision=precision)  # fmt: skip


def real_tokens(tokenizer, prefix: str, texts: list[str], max_length: int) -> int:
    ids = tokenizer([prefix + t for t in texts], truncation=True, max_length=max_length)["input_ids"]
    return sum(len(x) for x in ids)


def measure_predict(spec: dict) -> dict:
    from xmeta.commands.predict import write_predictions

    texts = sib200_test_sentences(spec["langs"], spec["sentences"])
    t0 = time.perf_counter()
    predictor = adapted_predictor(spec, spec["precision"])
    setup_s = time.perf_counter() - t0
    enc = predictor.model.encoder
    write_predictions(predictor, texts[: spec["batch_size"]], io.StringIO(), spec["batch_size"])  # warm-up
    times = []
    for _ in range(spec.get("repeats", 1)):
        t0 = time.perf_counter()
        write_predictions(predictor, texts, io.StringIO(), spec["batch_size"])
        times.append(time.perf_counter() - t0)
    seconds = min(times)  # other load only slows down
    # FLOPs of the same computation (model maths over real tokens), on a subset, scaled by tokens.
    sub = texts[: spec.get("flop_sentences", 256)]
    box = [0]
    with count_flops(box):
        predictor.predict(sub)
    tok_all = real_tokens(enc.tokenizer, enc.cfg.text_prefix, texts, enc.cfg.max_length)
    tok_sub = real_tokens(enc.tokenizer, enc.cfg.text_prefix, sub, enc.cfg.max_length)
    flops_per_sentence = box[0] * (tok_all / tok_sub) / len(texts)
    return {
        "sentences": len(texts),
        "seconds": seconds,
        "seconds_all": times,
        "sentences_per_s": len(texts) / seconds,
        "flops_per_sentence": flops_per_sentence,
        "real_tokens_per_sentence": tok_all / len(texts),
        "precision": predictor.precision,
        "batch_size": spec["batch_size"],
        "max_length": enc.cfg.max_length,
        "model": spec.get("model", "default"),
        "support": f"{spec['support_lang']} dev, {spec['n_way']}-way {spec['k_shot']}-shot",
        "langs": spec["langs"],
        "adapt_and_load_seconds": setup_s,
        "peak_rss_mb": round(rss_peak_mb(), 1),
    }


def measure_plain_hf(spec: dict) -> dict:
    """A user's plain transformers loop over the same encoder (fp32): padded batches, mean pooling.

    Its timed passes alternate with passes of ``xmeta predict``'s code path at xmeta's default
    inference precision over the same sentences, in this one process (``interleaved``): the ratio
    of the two is then taken under the same conditions, where two processes minutes apart see
    this host's throughput drift by ~10%.
    """
    from transformers import AutoModel, AutoTokenizer

    from xmeta.adaptation.predictor import resolve_precision
    from xmeta.commands.predict import DEFAULT_PRECISION, write_predictions
    from xmeta.models.encoder import resolve_encoder_path

    texts = sib200_test_sentences(spec["langs"], spec["sentences"])
    path = resolve_encoder_path(spec["encoder"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    prefix, bs, max_length = spec.get("text_prefix", "query: "), spec["batch_size"], spec.get("hf_max_length", 512)

    def embed(batch: list[str]) -> torch.Tensor:
        enc = tokenizer([prefix + t for t in batch], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")  # fmt: skip
        out = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
        return (out * mask).sum(1) / mask.sum(1)

    def plain_pass() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(texts), bs):
                embed(texts[i : i + bs])
        return time.perf_counter() - t0

    def xmeta_pass() -> float:
        t0 = time.perf_counter()
        write_predictions(predictor, texts, io.StringIO(), bs)
        return time.perf_counter() - t0

    predictor = adapted_predictor(spec, resolve_precision(DEFAULT_PRECISION)) if spec.get("interleaved", True) else None
    with torch.inference_mode():
        embed(texts[:bs])  # warm-up
    if predictor is not None:
        write_predictions(predictor, texts[:bs], io.StringIO(), bs)
    times, xmeta_times = [], []
    for _ in range(spec.get("repeats", 1)):
        times.append(plain_pass())
        if predictor is not None:
            xmeta_times.append(xmeta_pass())
    box = [0]
    sub = texts[: spec.get("flop_sentences", 256)]
    with torch.inference_mode(), count_flops(box):
        for i in range(0, len(sub), bs):
            embed(sub[i : i + bs])
    seconds = min(times)
    out = {
        "sentences": len(texts),
        "seconds": seconds,
        "seconds_all": times,
        "sentences_per_s": len(texts) / seconds,
        # executed FLOPs (padding included) of the first batches, per sentence
        "flops_executed_per_sentence": box[0] / len(sub),
        "precision": "fp32",
        "batch_size": bs,
        "max_length": max_length,
        "encoder": str(path),
    }
    if predictor is not None:  # best pass of each over the same rounds; each round's own ratio beside it
        out["interleaved"] = {
            "xmeta_precision": predictor.precision,
            "xmeta_seconds_all": xmeta_times,
            "xmeta_sentences_per_s": len(texts) / min(xmeta_times),
            "ratio": seconds / min(xmeta_times),
            "ratio_by_round": [round(p / x, 3) for p, x in zip(times, xmeta_times)],
        }
    out["peak_rss_mb"] = round(rss_peak_mb(), 1)
    return out


def measure_query_flops(spec: dict) -> dict:
    """Model FLOPs per query of the two sides of ``query_speedup_vs_icl``, on the same queries.

    The encoder side is the ``latency/default`` setting (the ProtoMAML recipe's model adapted to
    the 7x5 support set); the ICL side is ``icl`` (the LLM with the support set in its prompt, the
    shared prefix KV-cached, so a query costs its own tokens plus the label scoring).
    """
    from common import build_model, build_setting  # eval/perf/common.py

    from xmeta.icl import ICLLearner
    from xmeta.meta import MetaLearner

    support, queries = eval_episode(spec["lang"], spec["n_way"], spec["k_shot"], spec["queries"], spec["seed"])
    texts = [q.text for q in queries]
    enc_cfg, meta_cfg, _, precision = build_setting({**spec, "algorithm": "default", "layout": "top4"})
    model = build_model(enc_cfg, meta_cfg, spec.get("lora_std", 0.01), spec["seed"])
    encoder_side = MetaLearner(model, precision="fp32").adapt(support)
    box = [0]
    with count_flops(box):
        encoder_side.predict(texts)
    encoder_flops = box[0] / len(texts)
    del model, encoder_side
    learner = ICLLearner(spec["icl_model"], use_cache=True, template="topic", batch_size=16)
    learner.load()
    icl_side = learner.adapt(support)
    icl_side.predict(texts[:1])  # the shared prefix: encoded once (the ICL "adaptation"), not per query
    box = [0]
    with count_flops(box):
        icl_side.predict(texts[1:])
    icl_flops = box[0] / max(1, len(texts) - 1)
    return {
        "encoder_flops_per_query": encoder_flops,
        "icl_flops_per_query": icl_flops,
        "flop_ratio_icl_over_encoder": icl_flops / encoder_flops if encoder_flops else None,
        "queries": len(texts),
        "icl_model": spec["icl_model"],
        "peak_rss_mb": round(rss_peak_mb(), 1),
    }
