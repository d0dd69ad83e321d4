"""The HTTP app of ``xmeta serve`` (FastAPI): classify, list models, health, metrics, a try-it page.

Every error is a JSON object ``{"error": {"status": ..., "message": ...}}`` with a 4xx/5xx status;
no stack trace ever reaches a client (unexpected failures are logged and answered with 500).
Classification numbers are exactly those of ``xmeta predict`` (the same predictor, the same
``Prediction.records`` rounding).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from xmeta.interfaces import Predictor
from xmeta.serve.batching import BatchStats, DynamicBatcher, NonFiniteScores, QueueFull, ShuttingDown

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of a server (the ``xmeta serve`` flags)."""

    max_texts: int = 256  # texts per request; more -> 413
    max_chars: int = 10_000  # characters per text; more -> 413
    max_batch: int = 64  # texts per forward pass gathered across requests
    max_wait_ms: float = 5.0  # how long the batcher waits for more requests
    max_queue: int = 4096  # texts waiting; more -> 503 + Retry-After
    token: str | None = None  # bearer token required on /v1/* and /metrics when set
    adapt_dir: Path | None = None  # enables POST /v1/adapt, which persists classifiers here

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_chars", "max_batch", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")

    @property
    def max_body(self) -> int:
        """Largest request body accepted (worst-case UTF-8 of the largest valid request, plus JSON)."""
        return self.max_texts * (self.max_chars * 4 + 16) + 4096


class ClassifyRequest(BaseModel):
    model: str | None = Field(None, description="model name (see GET /v1/models); optional when one is served")
    texts: list[str] = Field(..., description="texts to classify, at most --max-texts, each non-empty")


class SupportItem(BaseModel):
    text: str
    label: str


class AdaptRequest(BaseModel):
    name: str = Field(..., description="name of the new classifier ([A-Za-z0-9_.-], at most 64)")
    lang: str | None = Field(None, description="FLORES-style code of the support language, e.g. swh_Latn")
    support: list[SupportItem] = Field(..., description="labelled examples (at least 2 labels)")
    base: str = Field("default", description="meta-trained model to adapt: 'default' or a run directory")


@dataclasses.dataclass
class ServedModel:
    """A classifier the server holds, with what ``GET /v1/models`` tells about it."""

    predictor: Predictor
    info: dict[str, Any]


def describe(name: str, predictor: Any, directory: Path | None) -> dict[str, Any]:
    """The ``/v1/models`` entry of an adapted predictor (language, labels, base model, card)."""
    meta = getattr(predictor, "metadata", {}) or {}
    enc = getattr(getattr(predictor, "model", None), "encoder", None)
    card = (directory / "README.md") if directory else None
    return {
        "name": name,
        "lang": meta.get("lang", "und"),
        "lang_name": meta.get("lang_name"),
        "labels": list(predictor.label_names),
        "base_model": getattr(getattr(enc, "cfg", None), "model", None),
        "source": meta.get("source", {}).get("model") if isinstance(meta.get("source"), dict) else None,
        "algorithm": meta.get("adaptation", {}).get("algorithm"),
        "created": meta.get("created"),
        "path": str(directory) if directory else None,
        "card": card.read_text(encoding="utf-8") if card and card.is_file() else None,
    }


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("xmeta_requests", "HTTP requests", ["path", "status"], registry=r)
        self.latency = Histogram(
            "xmeta_request_seconds",
            "request latency",
            ["path"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.batch = Histogram(
            "xmeta_batch_texts",
            "texts per forward pass",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.batch_requests = Histogram(
            "xmeta_batch_requests", "requests per forward pass", registry=r, buckets=(1, 2, 4, 8, 16, 32, 64)
        )
        self.texts = Counter("xmeta_texts_classified", "texts classified", ["model"], registry=r)
        self.queued = Gauge("xmeta_queue_texts", "texts waiting for a forward pass", registry=r)

    def on_batch(self, stats: BatchStats) -> None:
        self.batch.observe(stats.texts)
        self.batch_requests.observe(stats.requests)
        self.texts.labels(stats.model).inc(stats.texts)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)


def _validation_message(err: RequestValidationError) -> tuple[int, str]:
    first = err.errors()[0] if err.errors() else {}
    if first.get("type") == "json_invalid":
        return 400, f"request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})"
    loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
    if first.get("type") == "missing":
        return 422, f"missing field {loc!r}"
    return 422, f"{loc}: {first.get('msg', 'invalid value')}"


def create_app(
    models: dict[str, ServedModel],
    settings: ServeSettings | None = None,
    *,
    adapter: Callable[[AdaptRequest], tuple[Predictor, Path]] | None = None,
) -> FastAPI:
    """The ASGI app serving ``models`` (name -> ``ServedModel``).

    Args:
        models: the classifiers; names appear in requests and ``/v1/models``.
        settings: limits, batching, token, ``/v1/adapt``.
        adapter: builds and persists a classifier for ``POST /v1/adapt`` (only used when
            ``settings.adapt_dir`` is set); runs on a worker thread.
    """
    settings = settings or ServeSettings()
    metrics = _Metrics()
    batcher = DynamicBatcher(
        {n: m.predictor for n, m in models.items()},
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        on_batch=metrics.on_batch,
    )
    adapt_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        logger.info("serving %d model(s): %s", len(models), ", ".join(models))
        yield
        # uvicorn calls this after in-flight requests finished (graceful shutdown on SIGTERM).
        batcher.stop()

    app = FastAPI(
        title="xmeta serve",
        version=_version(),
        description="Few-shot text classifiers adapted with `xmeta adapt`, with dynamic batching.",
        lifespan=lifespan,
    )
    app.state.batcher, app.state.models, app.state.settings, app.state.metrics = batcher, models, settings, metrics

    open_paths = {"/", "/healthz", "/readyz", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"}
    known_paths = open_paths | {"/metrics", "/v1/classify", "/v1/adapt", "/v1/models"}

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable) -> Response:
        path = request.url.path
        start = time.perf_counter()
        # Metric label: known paths only, so that scanners cannot grow the label set without bound.
        label = path if path in known_paths else "other"
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            response: Response = _error(400, "invalid Content-Length header")
        elif length > settings.max_body:
            response = _error(413, f"request body of {length} bytes is over the limit of {settings.max_body}")
        elif settings.token and path not in open_paths and not _authorized(request, settings.token):
            response = _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        else:
            response = await call_next(request)
        metrics.requests.labels(label, str(response.status_code)).inc()
        metrics.latency.labels(label).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, err: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(err)
        return _error(status, message)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, err: HTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, err: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return _error(500, "internal error (details are in the server log)")

    @app.post("/v1/classify", summary="Classify texts with a served model")
    async def classify(body: ClassifyRequest) -> dict[str, Any]:
        """Labels and per-label probabilities, the same numbers as `xmeta predict` on the same texts."""
        name = body.model
        if name is None:
            if len(models) != 1:
                raise HTTPException(422, f"field 'model' is required when several models are served: {sorted(models)}")
            name = next(iter(models))
        if name not in models:
            raise HTTPException(404, f"unknown model {name!r}; served: {', '.join(sorted(models))}")
        if not body.texts:
            raise HTTPException(422, "texts is empty; send at least one text")
        if len(body.texts) > settings.max_texts:
            raise HTTPException(413, f"{len(body.texts)} texts is over the limit of {settings.max_texts} per request")
        for i, text in enumerate(body.texts):
            if not text.strip():
                raise HTTPException(422, f"texts[{i}] is empty")
            if len(text) > settings.max_chars:
                raise HTTPException(
                    413, f"texts[{i}] has {len(text)} characters, over the limit of {settings.max_chars}"
                )
        try:
            pred = await batcher.submit(name, body.texts)
        except QueueFull as err:
            raise HTTPException(503, str(err), headers={"Retry-After": str(err.retry_after)}) from None
        except ShuttingDown as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "1"}) from None
        except NonFiniteScores as err:
            raise HTTPException(500, str(err)) from None
        finally:
            metrics.queued.set(batcher.queued_texts)
        return {"model": name, "labels": list(pred.label_names), "predictions": pred.records()}

    @app.post("/v1/adapt", summary="Adapt a new classifier from a support set (off unless --adapt-dir)")
    async def adapt(body: AdaptRequest) -> dict[str, Any]:
        """Adapt `base` to the support set, persist it under --adapt-dir/NAME and serve it as NAME."""
        if settings.adapt_dir is None or adapter is None:
            raise HTTPException(404, "adaptation is disabled on this server (start it with --adapt-dir DIR)")
        if not NAME_RE.match(body.name):
            raise HTTPException(422, f"name {body.name!r} must match {NAME_RE.pattern}")
        async with adapt_lock:
            if body.name in models:
                raise HTTPException(409, f"model {body.name!r} already exists")
            from xmeta.errors import XmetaError

            try:
                predictor, directory = await asyncio.to_thread(adapter, body)
            except (XmetaError, ValueError) as err:
                raise HTTPException(422, str(err)) from None
            models[body.name] = ServedModel(predictor, describe(body.name, predictor, directory))
            batcher.predictors[body.name] = predictor
        return models[body.name].info

    @app.get("/v1/models", summary="The served models: language, labels, base model, card")
    async def list_models() -> dict[str, Any]:
        return {"models": [m.info for m in models.values()]}

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: models loaded and the batcher running")
    async def readyz() -> Response:
        if not batcher.running:
            return _error(503, "not ready (starting or shutting down)", {"Retry-After": "1"})
        return JSONResponse({"status": "ready", "models": sorted(models)})

    @app.get("/metrics", summary="Prometheus metrics: requests, latency, batch sizes, queue")
    async def prometheus() -> Response:
        metrics.queued.set(batcher.queued_texts)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("xmeta.serve").joinpath("page.html").read_text(encoding="utf-8"))

    return app


def _authorized(request: Request, token: str) -> bool:
    got = request.headers.get("authorization", "")
    scheme, _, value = got.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def _version() -> str:
    from xmeta import __version__

    return __version__
