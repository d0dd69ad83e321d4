"""The OpenAI-compatible client: retries and backoff, the response cache, concurrency bound, the key
kept out of every file and log; choice parsing and label log-probabilities from echoed tokens.

Failures are injected by a small scripted HTTP server on 127.0.0.1 (a real socket and real HTTP:
429/503 with Retry-After, 400, dropped connections), since no real LLM server fails on demand; the
real llama-cpp-python server is exercised in test_icl_server.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from xmeta.bench.methods import BuildContext, describe_method, parse_method
from xmeta.config import ConfigError
from xmeta.errors import InputError
from xmeta.icl.openai_client import OpenAIClient, ServerError, request_key
from xmeta.icl.remote import RemoteICLConfig, RemoteICLLearner, label_logprob, normalize_answer, parse_choice
from xmeta.interfaces import Example

KEY = "sk-test-not-a-real-key-4242"


class Scripted(BaseHTTPRequestHandler):
    """Answers each POST with the next scripted (status, body, headers); records what it received."""

    script: list[tuple[int, dict, dict]] = []
    seen: list[dict] = []
    in_flight = 0
    max_in_flight = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        with cls.lock:
            cls.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            status, answer, headers = cls.script.pop(0) if cls.script else (200, _completion(body), {})
            cls.in_flight += 1
            cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
        if status == -1:  # drop the connection without an answer
            self.close_connection = True
            with cls.lock:
                cls.in_flight -= 1
            return
        time.sleep(0.05)
        data = json.dumps(answer).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        with cls.lock:
            cls.in_flight -= 1

    def log_message(self, *args) -> None:
        pass


def _completion(body: dict) -> dict:
    """An echo completion whose label tokens are the words after the prompt's last ':'."""
    if "messages" in body:
        return {
            "choices": [{"message": {"content": " Sports.\nbecause"}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3},
        }
    prompt = body["prompt"]
    cut = prompt.rindex(" ")
    tokens, offsets = [prompt[:cut], prompt[cut:], " x"], [0, cut, len(prompt)]
    value = -1.0 if prompt[cut:] == " sports" else -3.0
    return {
        "choices": [{"text": prompt + " x", "logprobs": {"tokens": tokens, "text_offset": offsets,
                                                         "token_logprobs": [None, value, -0.1]}}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1},
    }  # fmt: skip


@pytest.fixture
def server():
    Scripted.script, Scripted.seen, Scripted.max_in_flight = [], [], 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_retries_429_and_503_honouring_retry_after_then_succeeds(server, tmp_path, caplog) -> None:
    Scripted.script = [(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.2"}), (503, {}, {}), (-1, {}, {})]
    client = OpenAIClient(server, KEY, cache_dir=tmp_path / "c", backoff_s=0.01, max_retries=3)
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        answer, cached = client.post("completions", {"model": "m", "prompt": "Topic: sports"})
    assert time.perf_counter() - t0 >= 0.2  # Retry-After was honoured
    assert not cached and answer["choices"][0]["logprobs"]["tokens"][1] == " sports"
    assert client.stats["retries"] == 3 and client.stats["sent"] == 1 and len(Scripted.seen) == 4
    assert "HTTP 429: slow down" in caplog.text and KEY not in caplog.text


def test_non_retryable_errors_and_exhausted_retries_name_the_problem(server, tmp_path) -> None:
    Scripted.script = [(400, {"error": {"message": "unknown model 'mm'"}}, {})]
    client = OpenAIClient(server, KEY, backoff_s=0.01, max_retries=2)
    with pytest.raises(ServerError, match="HTTP 400: unknown model 'mm'"):
        client.post("completions", {"model": "mm", "prompt": "x"})
    assert len(Scripted.seen) == 1  # not retried
    dead = OpenAIClient("http://127.0.0.1:9/v1", backoff_s=0.01, max_retries=1)  # nothing listens on port 9
    with pytest.raises(ServerError, match=r"gave up after 2 attempts"):
        dead.post("completions", {"model": "m", "prompt": "x"})


def test_cache_answers_a_repeated_request_and_never_holds_the_key(server, tmp_path) -> None:
    client = OpenAIClient(server, KEY, cache_dir=tmp_path / "c")
    payload = {"model": "m", "prompt": "Topic: health", "echo": True}
    first, hit1 = client.post("completions", payload)
    again = OpenAIClient(server, "another-key", cache_dir=tmp_path / "c")  # a new process, another key
    second, hit2 = again.post("completions", dict(payload))
    assert (hit1, hit2) == (False, True) and first == second and len(Scripted.seen) == 1
    assert Scripted.seen[0]["auth"] == f"Bearer {KEY}"
    files = list((tmp_path / "c").rglob("*.json"))
    assert len(files) == 1 and KEY not in files[0].read_text() and KEY not in repr(client)
    assert request_key(server, "completions", payload) != request_key(server, "completions", {**payload, "prompt": "x"})


def test_no_server_configured_is_an_input_error(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(InputError, match="OPENAI_BASE_URL"):
        OpenAIClient()


def _support() -> list[Example]:
    return [Example(f"{n}{i}", f"text {n} {i}", lab, n) for lab, n in enumerate(["sports", "health"]) for i in range(2)]


def test_loglik_scores_every_label_with_bounded_concurrency(server, tmp_path) -> None:
    cfg = RemoteICLConfig(model="m", base_url=server, cache_dir=str(tmp_path / "c"), max_concurrency=2)
    pred = RemoteICLLearner(cfg).adapt(_support(), seed=0)
    out = pred.predict(["a", "b", "c"])
    assert out.names() == ["sports"] * 3 and not out.missing.any()
    np.testing.assert_allclose(out.probs[:, 0], 1 / (1 + np.exp(-2.0)))  # softmax of the summed log-probs -1, -3
    assert len(Scripted.seen) == 6 and 1 < Scripted.max_in_flight <= 2
    sent = Scripted.seen[0]["body"]
    assert sent["echo"] is True and sent["max_tokens"] == 1 and sent["logprobs"] == 1
    assert sent["prompt"].startswith(pred.prefix) and pred.prefix.count("text ") == 4  # exactly the support set
    assert pred.usage() == {"requests": 6, "cached": 0, "prompt_tokens": 12, "completion_tokens": 6}
    RemoteICLLearner(cfg).adapt(_support(), seed=0).predict(["a", "b", "c"])
    assert len(Scripted.seen) == 6  # a rerun sends nothing


def test_choice_answers_are_parsed_against_the_verbalizers(server, tmp_path) -> None:
    cfg = RemoteICLConfig(model="m", base_url=server, scoring="choice", cache_dir=str(tmp_path / "c"))
    out = RemoteICLLearner(cfg).adapt(_support(), seed=0).predict(["a"])
    assert out.names() == ["sports"] and not out.missing.any()
    assert Scripted.seen[0]["path"] == "/v1/chat/completions"
    options = {"sports": 0, "science/technology": 1}
    assert parse_choice("  Science/Technology.", options) == 1
    assert parse_choice("**sports**", options) == 0
    assert parse_choice("I think it is about sports", options) is None  # no guessing inside sentences
    assert parse_choice("", options) is None and normalize_answer(" «Sports»! ") == "sports"


def test_label_logprob_uses_the_tokens_from_the_label_boundary() -> None:
    resp = {"choices": [{"logprobs": {"text_offset": [0, 5, 11, 14], "token_logprobs": [None, -1.0, -0.5, -9.0]}}]}
    assert label_logprob(resp, 5, 14) == (-1.5, 2)  # the generated token (offset 14) is not part of the label
    with pytest.raises(ServerError, match="no echoed token starts at the label"):
        label_logprob(resp, 6, 14)
    nan = {"choices": [{"logprobs": {"text_offset": [0, 5], "token_logprobs": [None, float("nan")]}}]}
    with pytest.raises(ServerError, match="non-finite"):
        label_logprob(nan, 5, 14)  # never a NaN score
    with pytest.raises(ServerError, match="echo"):
        label_logprob({"choices": [{"logprobs": None}]}, 5, 14)


def test_bench_refuses_a_key_in_the_config_and_describes_server_methods() -> None:
    ctx = BuildContext("sib200", "multilingual-e5-small", {"openai": {"api_key": KEY}})
    with pytest.raises(ConfigError, match="never hold keys"):
        describe_method(parse_method("icl:openai:gpt-x"), ctx)
    ctx = BuildContext("sib200", "multilingual-e5-small", {"openai": {"scoring": "choice"}, "batch_size": 3})
    with pytest.raises(ConfigError, match="batch_size"):
        describe_method(parse_method("icl:openai:gpt-x"), ctx)  # an in-process option means nothing to a server
    info = describe_method(
        parse_method("icl:openai:gpt-x"), BuildContext("sib200", "e5", {"openai": {"scoring": "choice"}})
    )
    assert info.details == {"model": "gpt-x", "template": "topic", "mode": "in-context",
                            "backend": "openai-compatible server", "scoring": "choice"}  # fmt: skip
