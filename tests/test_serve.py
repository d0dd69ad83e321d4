"""`xmeta serve` on a tiny adapted model: equality with `xmeta predict`, every error path, batching,
auth, adaptation over HTTP, graceful shutdown of a real server process, and the CLI's refusals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from adapt_fixtures import write_corpus, write_encoder, write_meta_checkpoint

import xmeta
from xmeta.cli import main as xmeta_main
from xmeta.serve import load_models, make_adapter
from xmeta.serve.app import ServeSettings, create_app
from xmeta.serve.batching import DynamicBatcher, QueueFull

ROOT = Path(__file__).resolve().parents[1]


def rows(data: Path, split: str, lang: str = "ccc_Latn") -> list[tuple[str, str]]:
    lines = (data / lang / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [tuple(line.split("\t")) for line in lines]  # type: ignore[misc]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Tiny corpus, encoder, a protonet checkpoint, and two adapted models (ccc and bbb) saved to disk."""
    root = tmp_path_factory.mktemp("serve")
    paths = {"data": write_corpus(root / "data"), "model": write_encoder(root / "model")}
    paths["meta"] = write_meta_checkpoint(root / "meta", paths["model"], algorithm="protonet", projection_dim=8)
    for lang, name in (("ccc_Latn", "ccc"), ("bbb_Latn", "bbb")):
        pred = xmeta.adapt(rows(paths["data"], "dev", lang), paths["meta"], lang=lang)
        paths[name] = pred.save(root / name)
    return paths


class Server:
    """A real uvicorn server for an app, on a free port, in a thread of this process."""

    def __init__(self, app) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture(scope="module")
def served(tiny):
    models = load_models({"ccc": tiny["ccc"], "bbb": tiny["bbb"]})
    app = create_app(models, ServeSettings(max_texts=8, max_chars=200, max_wait_ms=50))
    with Server(app) as server:
        yield server, app


def test_models_share_one_backbone_and_describe_themselves(served, tiny):
    server, app = served
    a, b = (app.state.models[n].predictor for n in ("ccc", "bbb"))
    assert a.model.encoder is b.model.encoder
    info = httpx.get(f"{server.url}/v1/models").json()["models"]
    assert [m["name"] for m in info] == ["ccc", "bbb"]
    first = info[0]
    assert first["lang"] == "ccc_Latn" and first["labels"] == ["health", "money", "sport"]
    assert first["base_model"] == str(tiny["model"]) and "xmeta adapted classifier" in first["card"]
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready", "models": ["bbb", "ccc"]}
    assert "/v1/classify" in httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_classify_gives_the_numbers_of_xmeta_predict(served, tiny, tmp_path):
    server, _ = served
    texts = [t for t, _ in rows(tiny["data"], "test")]
    inp, out = tmp_path / "texts.txt", tmp_path / "preds.jsonl"
    inp.write_text("\n".join(texts) + "\n", encoding="utf-8")
    argv = ["predict", "--model", str(tiny["ccc"]), "--input", str(inp), "--output", str(out), "--precision", "fp32"]
    assert xmeta_main(argv) == 0  # the served models are loaded in fp32 (the library's default)
    offline = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    got = []
    for start in range(0, len(texts), 8):
        r = httpx.post(f"{server.url}/v1/classify", json={"model": "ccc", "texts": texts[start : start + 8]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "ccc" and body["labels"] == ["health", "money", "sport"]
        got += body["predictions"]
    assert [g["label"] for g in got] == [o["label"] for o in offline]
    for g, o in zip(got, offline):
        assert list(g["scores"]) == list(o["scores"])
        # different batch compositions pad differently: fp32 rounding only
        assert max(abs(g["scores"][k] - o["scores"][k]) for k in g["scores"]) <= 2e-6


@pytest.mark.parametrize(
    "body, status, needle",
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"model": "ccc"}), 422, "missing field 'texts'"),
        (json.dumps({"model": "ccc", "texts": "one string"}), 422, "texts: Input should be a valid list"),
        (json.dumps({"model": "ccc", "texts": [1, 2]}), 422, "texts.0: Input should be a valid string"),
        (json.dumps({"model": "ccc", "texts": []}), 422, "texts is empty"),
        (json.dumps({"model": "ccc", "texts": ["ok", "  "]}), 422, "texts[1] is empty"),
        (json.dumps({"model": "nope", "texts": ["x"]}), 404, "unknown model 'nope'; served: bbb, ccc"),
        (json.dumps({"texts": ["x"]}), 422, "'model' is required when several models are served"),
        (json.dumps({"model": "ccc", "texts": ["x"] * 9}), 413, "9 texts is over the limit of 8"),
        (json.dumps({"model": "ccc", "texts": ["x" * 201]}), 413, "texts[0] has 201 characters"),
    ],
)
def test_bad_requests_get_json_errors_never_tracebacks(served, body, status, needle):
    server, _ = served
    r = httpx.post(f"{server.url}/v1/classify", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["status"] == status and needle in err["message"], err
    assert "Traceback" not in r.text


def test_oversized_body_is_413_before_parsing(served):
    server, app = served
    big = b"x" * (app.state.settings.max_body + 1)
    r = httpx.post(f"{server.url}/v1/classify", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/nowhere").json()["error"]["status"] == 404


def test_concurrent_requests_are_batched_and_counted(served, tiny):
    server, app = served
    texts = [t for t, _ in rows(tiny["data"], "test")][:12]
    before = app.state.batcher.batches

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url) as client:
            return await asyncio.gather(
                *(client.post("/v1/classify", json={"model": "ccc", "texts": [t]}) for t in texts)
            )

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    forward_passes = app.state.batcher.batches - before
    assert forward_passes < len(texts) / 2, forward_passes  # 12 requests within a 50 ms window
    # and every request got its own row, not a neighbour's
    alone = xmeta.load_predictor(tiny["ccc"]).predict(texts).names()
    assert [r.json()["predictions"][0]["label"] for r in responses] == alone
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'xmeta_requests_total{path="/v1/classify",status="200"}' in metrics
    assert "xmeta_batch_texts_bucket" in metrics and "xmeta_batch_requests_count" in metrics
    assert 'xmeta_texts_classified_total{model="ccc"}' in metrics


def test_full_queue_answers_503_with_retry_after(tiny):
    class Slow:
        label_names = ("a", "b")

        def predict(self, texts):
            time.sleep(0.3)
            return xmeta.load_predictor(tiny["ccc"]).predict(texts)

    batcher = DynamicBatcher({"m": Slow()}, max_batch=1, max_queue=2)
    batcher.start()

    async def go():
        first = asyncio.ensure_future(batcher.submit("m", ["a b"]))
        await asyncio.sleep(0.05)  # the worker took the first; the queue is empty again
        second = asyncio.ensure_future(batcher.submit("m", ["a", "b"]))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as err:
            await batcher.submit("m", ["c"])
        assert err.value.retry_after >= 1 and "2 texts queued (limit 2)" in str(err.value)
        await asyncio.gather(first, second)

    asyncio.run(go())
    batcher.stop()


def test_queue_full_maps_to_http_503(tiny):
    models = load_models({"ccc": tiny["ccc"]})
    app = create_app(models, ServeSettings(max_queue=1, max_wait_ms=0))
    real = app.state.batcher.predictors["ccc"]

    class Slow:
        label_names = real.label_names

        def predict(self, texts):
            time.sleep(0.5)
            return real.predict(texts)

    app.state.batcher.predictors["ccc"] = Slow()
    with Server(app) as server:

        async def go():
            async with httpx.AsyncClient(base_url=server.url) as c:
                return await asyncio.gather(*(c.post("/v1/classify", json={"texts": ["a", "b"]}) for _ in range(4)))

        codes = sorted(r.status_code for r in asyncio.run(go()))
        busy = [r for r in asyncio.run(go()) if r.status_code == 503]
    assert codes[0] == 200 and 503 in codes
    assert busy and int(busy[0].headers["Retry-After"]) >= 1 and "server busy" in busy[0].json()["error"]["message"]


def test_non_finite_scores_are_an_error_not_an_output(tiny):
    import numpy as np

    from xmeta.interfaces import Prediction

    class Broken:
        label_names = ("a", "b")

        def predict(self, texts):
            return Prediction(np.zeros(len(texts), dtype=np.int64), np.full((len(texts), 2), np.nan), self.label_names)

    from xmeta.serve.app import ServedModel

    app = create_app({"broken": ServedModel(Broken(), {"name": "broken"})})
    with Server(app) as server:
        r = httpx.post(f"{server.url}/v1/classify", json={"texts": ["x"]})
    assert r.status_code == 500 and "non-finite scores" in r.json()["error"]["message"]
    assert "NaN" not in r.text.replace("non-finite", "")


def test_bearer_token_guards_the_api_but_not_health(tiny):
    app = create_app(load_models({"ccc": tiny["ccc"]}), ServeSettings(token="s3cret"))
    with Server(app) as server:
        assert httpx.post(f"{server.url}/v1/classify", json={"texts": ["x"]}).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(f"{server.url}/v1/models", headers=wrong).status_code == 401
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert httpx.post(f"{server.url}/v1/classify", json={"texts": ["x"]}, headers=ok).status_code == 200
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.get(f"{server.url}/").status_code == 200


def test_adapt_endpoint_persists_a_new_classifier(tiny, tmp_path):
    store = tmp_path / "served"
    settings = ServeSettings(adapt_dir=store)
    app = create_app(load_models({"ccc": tiny["ccc"]}), settings,
                     adapter=make_adapter(store, {"default": str(tiny["meta"])}))  # fmt: skip
    support = [{"text": t, "label": label} for t, label in rows(tiny["data"], "dev", "aaa_Latn")]
    test = [t for t, _ in rows(tiny["data"], "test", "aaa_Latn")]
    with Server(app) as server:
        r = httpx.post(f"{server.url}/v1/adapt", json={"name": "aaa", "lang": "aaa_Latn", "support": support},
                       timeout=60)  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["labels"] == ["health", "money", "sport"] and r.json()["lang"] == "aaa_Latn"
        again = httpx.post(f"{server.url}/v1/adapt", json={"name": "aaa", "support": support})
        assert again.status_code == 409
        bad = httpx.post(f"{server.url}/v1/adapt", json={"name": "x", "support": support, "base": "/etc"})
        assert bad.status_code == 422 and "unknown base '/etc'" in bad.json()["error"]["message"]
        one = httpx.post(f"{server.url}/v1/adapt", json={"name": "y", "support": support[:3]})
        assert one.status_code == 422, one.text
        served = httpx.post(f"{server.url}/v1/classify", json={"model": "aaa", "texts": test}).json()
    # persisted through the artifact format: the saved directory predicts the same
    saved = xmeta.load_predictor(store / "aaa").predict(test)
    assert [p["label"] for p in served["predictions"]] == saved.names()


def test_adapt_endpoint_is_off_by_default(served):
    server, _ = served
    r = httpx.post(f"{server.url}/v1/adapt", json={"name": "z", "support": []})
    assert r.status_code == 404 and "--adapt-dir" in r.json()["error"]["message"]


def test_cli_refuses_open_bind_without_token_and_bad_model_names(tiny, capsys, monkeypatch):
    monkeypatch.delenv("XMETA_SERVE_TOKEN", raising=False)
    assert xmeta_main(["serve", "--model", str(tiny["ccc"]), "--host", "0.0.0.0"]) == 2
    assert "set XMETA_SERVE_TOKEN" in capsys.readouterr().err
    assert xmeta_main(["serve", "--model", f"a={tiny['ccc']}", "--model", f"a={tiny['bbb']}"]) == 2
    assert "is used twice" in capsys.readouterr().err
    assert xmeta_main(["serve"]) == 2
    assert "at least one --model" in capsys.readouterr().err
    assert xmeta_main(["serve", "--model", str(tiny["data"])]) == 2
    assert "not an adapted model" in capsys.readouterr().err


def test_sigterm_finishes_requests_in_flight_then_exits(tiny, tmp_path):
    """A real `xmeta serve` process: a request in flight when SIGTERM arrives is still answered."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # A long wait makes the request sit in the batcher when the signal arrives.
    cmd = [sys.executable, "-m", "xmeta.cli", "serve", "--model", f"ccc={tiny['ccc']}", "--port", str(port),
           "--max-wait-ms", "1500", "--max-batch", "1000"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        result: dict[str, httpx.Response] = {}
        texts = [t for t, _ in rows(tiny["data"], "test")][:4]
        t = threading.Thread(
            target=lambda: result.setdefault("r", httpx.post(f"{url}/v1/classify", json={"texts": texts}, timeout=30))
        )
        t.start()
        time.sleep(0.5)  # the request is waiting in the batcher
        proc.send_signal(signal.SIGTERM)
        t.join(30)
        # uvicorn re-raises the signal once it has drained, so the exit status says "terminated".
        assert proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result["r"].status_code == 200
    assert [p["label"] for p in result["r"].json()["predictions"]] == xmeta.load_predictor(tiny["ccc"]).predict(
        texts
    ).names()
    log = proc.stdout.read() if proc.stdout else ""
    assert "Shutting down" in log and "Traceback" not in log


def test_serve_help_teaches(capsys):
    with pytest.raises(SystemExit):
        xmeta_main(["serve", "--help"])
    out = capsys.readouterr().out
    for needle in ("POST /v1/classify", "curl", "XMETA_SERVE_TOKEN", "Retry-After", "SIGTERM", "/metrics"):
        assert needle in out, needle


CHROMIUM = Path("/usr/bin/chromium")


def test_page_in_a_real_browser_renders_labels_and_score_bars(served, tiny, tmp_path):
    """Headless Debian Chromium (driven by Playwright) picks a model, types two sentences, clicks
    Classify; the rendered labels equal the API's, and the screenshot's bars are as long as the scores."""
    if not CHROMIUM.exists():
        if os.environ.get("XMETA_REQUIRE_BROWSER"):
            pytest.fail("XMETA_REQUIRE_BROWSER is set but /usr/bin/chromium is missing (apt-get install chromium)")
        pytest.skip("no /usr/bin/chromium (apt-get install chromium); CI installs it")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    server, _ = served
    texts = [t for t, _ in rows(tiny["data"], "test", "bbb_Latn")][:2]
    api = httpx.post(f"{server.url}/v1/classify", json={"model": "bbb", "texts": texts}).json()["predictions"]
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]  # fmt: skip
    shot = tmp_path / "page.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        page = browser.new_page(viewport={"width": 900, "height": 900})
        page.goto(server.url + "/")
        page.wait_for_selector("#model option[value=bbb]", state="attached")
        page.select_option("#model", "bbb")
        page.fill("#texts", "\n".join(texts))
        page.click("#go")
        page.wait_for_selector("body[data-done='1']")
        shown = page.locator(".result .top").all_inner_texts()
        track = page.locator(".result").first.locator(".track").first.bounding_box()
        page.screenshot(path=str(shot))
        browser.close()
    assert shown == [p["label"] for p in api]
    # The first result's top bar (orange) is drawn as long as its probability times the track width.
    img = Image.open(shot).convert("RGB")
    y = int(track["y"] + track["height"] / 2)
    orange = [x for x in range(img.width) if _near(img.getpixel((x, y)), (0xE0, 0x66, 0x2B))]
    best = max(api[0]["scores"].values())
    assert orange, "no bar rendered"
    assert abs(len(orange) / track["width"] - best) < 0.02, (len(orange), track["width"], best)


def _near(rgb: tuple[int, int, int], want: tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(rgb, want))
