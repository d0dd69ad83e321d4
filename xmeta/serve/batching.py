"""Dynamic batching: texts from many concurrent requests share one forward pass.

One worker thread owns every model forward pass (torch already uses all cores for one batch, so
more threads would only contend). Requests wait in a bounded queue; the worker takes the oldest
request, then keeps adding queued requests *for the same model* until ``max_batch`` texts are
gathered or ``max_wait_ms`` has passed since it started gathering, runs one ``predict`` call, and
hands each request its rows. A request larger than ``max_batch`` runs on its own (the predictor
batches it internally), so no request is ever split or reordered.

The queue is bounded in *texts*, not requests: when admitting a request would exceed
``max_queue`` texts, ``submit`` raises ``QueueFull`` with an estimate of when to retry, which the
server turns into ``503`` + ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from xmeta.interfaces import Prediction, Predictor

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds too many texts; ``retry_after`` is an estimate in whole seconds."""

    def __init__(self, queued: int, limit: int, retry_after: int) -> None:
        super().__init__(f"server busy: {queued} texts queued (limit {limit}); retry in {retry_after} s")
        self.retry_after = retry_after


class NonFiniteScores(Exception):
    """A model produced NaN/inf scores (corrupt weights or input it cannot handle); never returned."""


class ShuttingDown(Exception):
    """The batcher no longer admits work (the server is draining)."""


@dataclasses.dataclass
class _Job:
    model: str
    texts: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """What one forward pass did (for metrics and tests)."""

    model: str
    requests: int
    texts: int
    seconds: float


class DynamicBatcher:
    """Merge concurrent classification requests into batched ``predict`` calls on one worker thread.

    Args:
        predictors: model name -> predictor (``xmeta.adaptation.AdaptedPredictor`` or any ``Predictor``).
        max_batch: most texts gathered into one ``predict`` call (a larger request runs alone).
        max_wait_ms: longest the worker waits for more requests once it holds one.
        max_queue: most texts waiting; beyond it ``submit`` raises ``QueueFull``.
        on_batch: called (on the worker thread) after every forward pass.
    """

    def __init__(
        self,
        predictors: Mapping[str, Predictor],
        *,
        max_batch: int = 64,
        max_wait_ms: float = 5.0,
        max_queue: int = 4096,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.predictors = dict(predictors)
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self.on_batch = on_batch
        self._jobs: collections.deque[_Job] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # forward passes run (a test checks that batching batches)
        self._rate = 0.0  # texts/s, exponentially averaged, for Retry-After

    @property
    def queued_texts(self) -> int:
        return self._queued

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closing

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="xmeta-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Admit nothing more, finish every queued request, then end the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    async def submit(self, model: str, texts: Sequence[str]) -> Prediction:
        """Queue ``texts`` for ``model`` and wait for their prediction (rows in input order).

        Raises:
            KeyError: unknown model.
            QueueFull: the queue is full (retry later).
            ShuttingDown: the server is draining.
            NonFiniteScores: the model produced non-finite scores.
        """
        if model not in self.predictors:
            raise KeyError(model)
        loop = asyncio.get_running_loop()
        job = _Job(model, list(texts), loop, loop.create_future(), time.perf_counter())
        with self._cond:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if self._queued and self._queued + len(job.texts) > self.max_queue:
                wait = (self._queued + len(job.texts)) / self._rate if self._rate > 0 else 1.0
                raise QueueFull(self._queued, self.max_queue, max(1, math.ceil(wait)))
            self._jobs.append(job)
            self._queued += len(job.texts)
            self._cond.notify()
        return await job.future

    def _gather(self) -> list[_Job] | None:
        """The next batch: the oldest job plus same-model jobs that arrive within the wait."""
        with self._cond:
            while not self._jobs:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._jobs.popleft()
            batch, size = [first], len(first.texts)
            deadline = time.perf_counter() + self.max_wait
            while size < self.max_batch:
                take = next((j for j in self._jobs if j.model == first.model), None)
                if take is not None:
                    if size + len(take.texts) > self.max_batch:
                        break
                    self._jobs.remove(take)
                    batch.append(take)
                    size += len(take.texts)
                    continue
                left = deadline - time.perf_counter()
                if left <= 0 or self._closing:
                    break
                self._cond.wait(left)
            self._queued -= size
            return batch

    def _work(self) -> None:
        while (batch := self._gather()) is not None:
            texts = [t for job in batch for t in job.texts]
            start = time.perf_counter()
            try:
                pred = self.predictors[batch[0].model].predict(texts)
                if not np.isfinite(pred.probs).all():
                    raise NonFiniteScores(
                        f"model {batch[0].model!r} produced non-finite scores; its weights may be corrupt "
                        "(re-run `xmeta adapt`, and `xmeta models verify` for the encoder)"
                    )
            except Exception as err:  # noqa: BLE001 - every error goes back to the requests it belongs to
                if isinstance(err, NonFiniteScores):
                    logger.error("%s", err)
                else:
                    logger.exception("batch of %d texts for %r failed", len(texts), batch[0].model)
                for job in batch:
                    job.loop.call_soon_threadsafe(_set_exception, job.future, err)
                continue
            seconds = time.perf_counter() - start
            rate = len(texts) / max(seconds, 1e-9)
            self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
            self.batches += 1
            at = 0
            for job in batch:
                n = len(job.texts)
                part = Prediction(pred.labels[at : at + n], pred.probs[at : at + n], pred.label_names)
                job.loop.call_soon_threadsafe(_set_result, job.future, part)
                at += n
            if self.on_batch is not None:
                self.on_batch(BatchStats(batch[0].model, len(batch), len(texts), seconds))


def _set_result(future: asyncio.Future, value: Prediction) -> None:
    if not future.done():  # the client may have gone away (its request task was cancelled)
        future.set_result(value)


def _set_exception(future: asyncio.Future, err: BaseException) -> None:
    if not future.done():
        future.set_exception(err)
