"""A client for OpenAI-compatible HTTP servers (vLLM, llama.cpp, llama-cpp-python, TGI, hosted APIs).

What a benchmark needs from it, and why:

- **Bounded concurrency** (``max_concurrency`` requests in flight): servers batch concurrent
  requests, hosted APIs rate-limit them.
- **Retries with exponential backoff and jitter** on 408/429/5xx, time-outs and dropped
  connections, honouring ``Retry-After``; other 4xx answers are errors at once (a wrong model
  name or key does not get better by retrying).
- **A persistent response cache** keyed by the full request (server URL, endpoint, JSON body;
  never the key): a rerun or a resumed benchmark sends nothing twice. One JSON file per request,
  written atomically, so a killed run never leaves a half-written entry.
- **The API key stays in memory**: it is read from the argument or ``$OPENAI_API_KEY``, sent as
  a bearer header, and never logged, cached, or written into results or configs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from xmeta.errors import InputError, XmetaError

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ServerError(XmetaError):
    """The server refused a request, or kept failing after every retry."""


def default_cache_dir() -> Path:
    """``$XMETA_CACHE/llm_responses`` (default ``~/.cache/xmeta/llm_responses``)."""
    from xmeta.models.zoo import cache_root

    return cache_root() / "llm_responses"


def request_key(base_url: str, endpoint: str, payload: dict[str, Any]) -> str:
    """sha256 of the canonical request: the same request always has the same key, the key never enters it."""
    blob = json.dumps({"url": base_url.rstrip("/"), "endpoint": endpoint, "body": payload}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Responses by request key under ``root/<2 hex>/<key>.json`` (atomic writes, safe across processes)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))["response"]
        except (OSError, ValueError, KeyError):
            return None  # absent or unreadable: ask the server again

    def put(self, key: str, request: dict[str, Any], response: dict[str, Any]) -> None:
        from xmeta.bench.store import atomic_write_json

        atomic_write_json(self._path(key), {"request": request, "response": response})


class OpenAIClient:
    """Posts JSON to an OpenAI-compatible server with caching, retries and bounded concurrency.

    Thread-safe: call :meth:`post` from many threads; at most ``max_concurrency`` requests are in flight.

    Args:
        base_url: Server URL up to ``/v1`` (e.g. ``http://127.0.0.1:8080/v1``); default ``$OPENAI_BASE_URL``.
        api_key: Bearer token; default ``$OPENAI_API_KEY`` (local servers need none).
        cache_dir: Response cache directory; ``None`` disables the cache.
        max_concurrency: Requests in flight at most.
        max_retries: Retries of a failing request (so ``max_retries + 1`` attempts).
        timeout_s: Seconds to wait for one response.
        backoff_s: First retry delay; doubles per retry (with jitter), capped at ``max_backoff_s``.
        max_backoff_s: Longest delay between attempts.

    Raises:
        InputError: No base URL anywhere.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        cache_dir: str | Path | None = None,
        max_concurrency: int = 4,
        max_retries: int = 6,
        timeout_s: float = 120.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        import httpx

        url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not url:
            raise InputError("no OpenAI-compatible server: pass base_url (method option) or set OPENAI_BASE_URL")
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError("max_concurrency must be >= 1, max_retries >= 0 and timeout_s > 0")
        self.base_url = url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers)
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.stats: Counter[str] = Counter()  # sent, cached, retries
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIClient({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def post(self, endpoint: str, payload: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The server's JSON answer to ``POST {base_url}/{endpoint}``, and whether it came from the cache.

        Raises:
            ServerError: A non-retryable error answer, or failure after ``max_retries`` retries.
        """
        key = request_key(self.base_url, endpoint, payload)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self._count("cached")
                return hit, True
        with self._slots:
            response = self._send(endpoint, payload)
        if self.cache is not None:
            self.cache.put(key, payload, response)
        return response, False

    def _send(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        url = f"{self.base_url}/{endpoint.lstrip('/')}"
        problem = ""
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                r = self._http.post(url, json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                if r.status_code == 200:
                    self._count("sent")
                    try:
                        return r.json()
                    except ValueError:
                        raise ServerError(f"{url}: the answer is not JSON: {r.text[:200]!r}") from None
                problem = f"HTTP {r.status_code}: {_error_text(r)}"
                if r.status_code not in RETRY_STATUS:
                    raise ServerError(f"{url}: {problem}")
                retry_after = _seconds(r.headers.get("retry-after"))
            if attempt == self.max_retries:
                break
            delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            delay = max(delay, retry_after or 0.0)
            logger.warning("%s: %s; retry %d/%d in %.1f s", url, problem, attempt + 1, self.max_retries, delay)
            self._count("retries")
            time.sleep(delay)
        raise ServerError(f"{url}: {problem} (gave up after {self.max_retries + 1} attempts)")


def _error_text(r: Any) -> str:
    try:
        body = r.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        return str(err.get("message", err) if isinstance(err, dict) else err)[:300]
    except ValueError:
        return r.text[:300]


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
