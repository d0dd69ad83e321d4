"""ICL through a real OpenAI-compatible server that the tests start: llama-cpp-python serving the
gemma-3-270m GGUF the zoo assembles. Agreement with the in-process scorer, a benchmark that survives
the server being killed, chat answers parsed into labels, and the fast echo formatter.

Engines: the in-process scorer runs the *dequantised* fp32 weights of the same Q4_K_M file through
transformers; llama.cpp multiplies the 4-bit blocks with 8-bit-quantised activations and tokenises
the joined prompt itself. Measured on a 7-way 5-shot Swahili episode (1,757 prefix tokens): label
log-likelihoods differ by 0.09 nats on average (at most 0.27), Pearson r = 0.98, the same argmax on
every query, Spearman 0.79-1.0 per query. Thresholds below leave margin for other episodes.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from xmeta.bench.config import BenchConfig
from xmeta.bench.episodes import load_eval_data, make_episodes

pytestmark = pytest.mark.slow  # llama-cpp-python[server] is in the test extras: a missing install fails, never skips


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from xmeta.icl.llama_server import LocalServer

    srv = LocalServer(log=tmp_path_factory.mktemp("llama") / "server.log").start()
    yield srv
    srv.stop(kill=True)


def _episode(data_dir: Path, lang: str = "swh_Latn", k: int = 5):
    cfg = BenchConfig(langs=[lang], episodes_per_lang=1, k_shot=[k], data_dir=str(data_dir))
    return make_episodes(cfg, load_eval_data(cfg))[k][lang][0]


def test_server_loglik_agrees_with_the_in_process_scorer(server, data_dir, tmp_path) -> None:
    from scipy.stats import spearmanr

    from xmeta.icl import ICLLearner
    from xmeta.icl.remote import RemoteICLConfig, RemoteICLLearner

    ep = _episode(data_dir)  # a real 7-way 5-shot episode: 35 demonstrations
    texts = [q.text for q in ep.query][::7]  # 5 queries (35 label scores) keep the test short
    cfg = RemoteICLConfig(model="gemma-3-270m", base_url=server.url, cache_dir=str(tmp_path / "c"), max_concurrency=2)
    remote = RemoteICLLearner(cfg).adapt(ep.support, seed=3)
    theirs = remote.score(texts)
    ours = ICLLearner("gemma-3-270m", template="topic").adapt(ep.support, seed=3).score(texts).logprob_sum
    assert remote.prefix == ICLLearner("gemma-3-270m").template.render_prefix(
        remote.label_names, [(d.text, d.label_name) for d in remote.demonstrations]
    )  # the same prompt: same template, exactly the support set, same order
    assert np.corrcoef(theirs.ravel(), ours.ravel())[0, 1] > 0.95
    assert np.mean(theirs.argmax(1) == ours.argmax(1)) >= 0.8
    assert np.mean([spearmanr(a, b)[0] for a, b in zip(theirs, ours)]) > 0.6
    assert np.abs(theirs - ours).mean() < 0.3  # nats per label
    usage = remote.usage()
    assert usage["requests"] == 35 and usage["cached"] == 0 and usage["prompt_tokens"] > 35 * 1700


def test_killed_server_leaves_a_resumable_benchmark(server, data_dir, tmp_path) -> None:
    from xmeta.bench.runner import run_bench

    cache = tmp_path / "responses"
    opts = {"base_url": server.url, "cache_dir": str(cache), "max_retries": 1, "backoff_s": 0.05, "max_concurrency": 1}
    cfg = BenchConfig(
        langs=["swh_Latn", "yor_Latn"], methods=["icl:openai:gemma-3-270m"], k_shot=[1], q_query=1,
        episodes_per_lang=1, data_dir=str(data_dir), out=str(tmp_path / "bench"), bootstrap=200, plots=False,
        method_options={"icl": {"openai": opts}},
    )  # fmt: skip
    per_cell = 7 * 7  # 7 queries x 7 labels, one request each

    def n_cached() -> int:
        return len(list(cache.glob("*/*.json")))

    killer = threading.Thread(target=lambda: _kill_after(server, n_cached, per_cell + 8), daemon=True)
    killer.start()
    first = run_bench(cfg, progress=False)
    killer.join(timeout=5)
    swh, yor = (first["methods"]["icl:openai:gemma-3-270m"]["per_lang"][lang] for lang in cfg.langs)
    assert swh["status"] == "ok" and swh["coverage"] == 1.0
    assert yor["status"] == "failed" and "ServerError" in yor["error"]
    cached_before = n_cached()
    assert per_cell + 8 <= cached_before < 2 * per_cell

    swh_cell = next((tmp_path / "bench" / "cells").glob("k1/*/swh_Latn.json"))
    stamp = swh_cell.stat().st_mtime_ns
    server.start()  # a fresh server on the same port
    second = run_bench(cfg, progress=False)
    m = second["methods"]["icl:openai:gemma-3-270m"]
    assert m["complete"] and swh_cell.stat().st_mtime_ns == stamp  # the finished cell was not re-run
    yor_cell = json.loads(next((tmp_path / "bench" / "cells").glob("k1/*/yor_Latn.json")).read_text())
    usage = yor_cell["episodes"][0]["usage"]
    assert usage["cached"] == cached_before - per_cell  # every response received before the kill is reused
    assert usage["requests"] == 2 * per_cell - cached_before  # and nothing is asked twice
    assert n_cached() == 2 * per_cell


def _kill_after(server, count, n: int) -> None:
    deadline = time.monotonic() + 600
    while count() < n and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop(kill=True)  # SIGKILL mid-benchmark: no goodbye to the clients


def test_choice_mode_parses_chat_answers_and_reports_coverage(server, data_dir, tmp_path) -> None:
    from xmeta.bench.runner import run_episode
    from xmeta.icl.remote import RemoteICLConfig, RemoteICLLearner

    ep = _episode(data_dir, k=1)
    cfg = RemoteICLConfig(model="gemma-3-270m", base_url=server.url, scoring="choice", cache_dir=str(tmp_path / "c"))
    learner = RemoteICLLearner(cfg)
    pred = learner.adapt(ep.support, seed=0)
    answers = pred.answers([q.text for q in ep.query])
    result = run_episode(learner, ep, seed=0)
    parsed = pred.predict([q.text for q in ep.query])
    assert len(answers) == 35 and all(isinstance(a, str) for a in answers)
    assert result.n_answered == int((~parsed.missing).sum())  # unparsable answers are missing, not guessed
    right = sum(int(p == q.label) for p, q in zip(parsed.labels, ep.query))
    assert result.accuracy == pytest.approx(right / 35)  # a missing answer counts as wrong
    assert result.usage["cached"] >= 35  # the second pass over the same queries came from the cache


def test_fast_echo_formatter_equals_llama_cpp_pythons_own(tmp_path) -> None:
    from llama_cpp import Llama

    from xmeta.icl import llama_server
    from xmeta.models.gguf_convert import cached_gguf

    llama_server.avoid_amx_repacking()  # as the server does: llama.cpp's AMX buffers crash on some CPUs
    llm = Llama(str(cached_gguf()), logits_all=True, n_ctx=256, n_threads=2, verbose=False)
    prompts = [
        "Mada: Timu ilishinda. Jibu: sports",
        "Mada: Timu ilishinda. Jibu: health",
        "ርዕስ: ጤና ነው። Answer: politics",
    ]
    kw = {"max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 2}

    def run() -> list[dict]:
        llm.reset()  # the same engine operations in both runs, so the same logits
        out = [llm.create_completion(p, **kw) for p in prompts]
        return [json.loads(json.dumps({k: v for k, v in o.items() if k not in ("id", "created")}, default=float))
                for o in out]  # fmt: skip

    original = run()
    llama_server.install()
    try:
        assert run() == original
    finally:
        llama_server.uninstall()
