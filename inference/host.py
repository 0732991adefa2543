"""Model hosting: one inference thread per model, micro-batching, bounded admission.

```
handler ──admit()──▶ ModelHost ──deque──▶ inference thread ──▶ engine.transcribe_batch()
   ▲    (503 node_overloaded                (groups compatible items: up to max_batch,
   └──── when max_queue requests             or max_wait_ms after the first one; skips
         are already admitted)               items whose caller has gone away)
```

FunASR's ``generate()`` is not thread-safe and a GPU gains nothing from two threads fighting
over it, so the thread that loads a model is the only one that ever touches it. Handlers await
futures and never block the event loop.

Live streams (online models, ``open_live``) queue their pieces in the same deque: a piece is
decoded alone when it reaches the front, between batches, so a stream waits its turn and never
holds a batch back. At most ``max_streams`` are open per model (503 node_overloaded beyond).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from inference import metrics
from inference.audio import SAMPLE_RATE, AudioArray
from inference.engines.base import Engine, EngineOutput
from inference.errors import InferenceError, ModelNotFound, NodeOverloaded, NotReady
from inference.memory import MemoryGuard
from inference.protocol import ModelInfo, TranscribeParams

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingSettings:
    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 64
    # A batch is padded to its longest item: cap that padded length, and only batch items at
    # least `min_fill` as long as the longest, so padding never costs more than batching saves.
    max_batch_audio_seconds: float = 120.0
    min_fill: float = 0.7
    # Live streams open at once on the model (online models only).
    max_streams: int = 16


@dataclass(eq=False)
class WorkItem:
    audio: AudioArray
    params: TranscribeParams
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[EngineOutput]
    enqueued_at: float = field(default_factory=time.perf_counter)

    @property
    def batch_key(self) -> tuple[object, ...]:
        """Items batch together only when every transcript-changing parameter agrees."""
        params = self.params
        return (
            params.language,
            params.hotwords,
            params.itn,
            params.word_timestamps,
            params.temperature,
        )

    @property
    def abandoned(self) -> bool:
        return self.future.cancelled()


@dataclass(eq=False)
class LiveItem:
    """One piece of a live stream, decoded alone with the stream's state."""

    stream: LiveStream
    audio: AudioArray
    is_final: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[str]
    enqueued_at: float = field(default_factory=time.perf_counter)

    @property
    def abandoned(self) -> bool:
        return self.future.cancelled()


class LiveStream:
    """An open live stream: its pieces, in order, through the model's inference thread."""

    def __init__(self, host: ModelHost, state: object) -> None:
        self.host = host
        self.state = state  # the engine's; only the inference thread touches it

    async def decode(self, audio: AudioArray, *, is_final: bool = False) -> str:
        """The text of ``audio``, the stream's next piece (``is_final``: its last)."""
        loop = asyncio.get_running_loop()
        item = LiveItem(self, audio, is_final, loop, loop.create_future())
        self.host._enqueue(item)
        return await item.future


def _deliver(future: asyncio.Future[Any], outcome: object) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class ModelHost:
    """One engine, the thread that owns it, and the queue in front of it."""

    def __init__(
        self, engine: Engine, batching: BatchingSettings, memory: MemoryGuard | None = None
    ) -> None:
        self.engine = engine
        self.batching = batching
        self.memory = memory or MemoryGuard()
        self.model_id = engine.model_id
        self.error: str | None = None
        self.loaded = threading.Event()  # set when loading ended, either way
        self._ready = False
        self._pending: deque[WorkItem | LiveItem] = deque()
        self._live_streams = 0
        self._condition = threading.Condition()
        self._stopping = False
        self._admitted = 0
        self._thread = threading.Thread(
            target=self._serve, name=f"infer-{engine.model_id}", daemon=True
        )
        metrics.init_model(self.model_id, batching.max_queue)

    @property
    def ready(self) -> bool:
        return self._ready

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work; the thread finishes its current batch and closes the engine."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread.is_alive() and self.loaded.is_set():
            self._thread.join(timeout)

    # -- event-loop side -------------------------------------------------------------------

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one of ``max_queue`` request slots, or fail fast with node_overloaded."""
        with self._condition:
            if self._admitted >= self.batching.max_queue:
                metrics.overloaded.labels(self.model_id).inc()
                raise NodeOverloaded(
                    f"Model '{self.model_id}' has {self._admitted} requests queued or running; "
                    "retry shortly."
                )
            self._admitted += 1
            metrics.requests_in_flight.labels(self.model_id).set(self._admitted)
        try:
            yield
        finally:
            with self._condition:
                self._admitted -= 1
                metrics.requests_in_flight.labels(self.model_id).set(self._admitted)

    @contextmanager
    def open_live(self, params: TranscribeParams) -> Iterator[LiveStream]:
        """A live stream on this model (an online one), or node_overloaded when ``max_streams``
        are open already."""
        state = self.engine.start_live(params)
        with self._condition:
            if self._live_streams >= self.batching.max_streams:
                metrics.overloaded.labels(self.model_id).inc()
                raise NodeOverloaded(
                    f"Model '{self.model_id}' has {self._live_streams} live streams open, its "
                    "limit; retry shortly."
                )
            self._live_streams += 1
            metrics.live_streams.labels(self.model_id).set(self._live_streams)
        try:
            yield LiveStream(self, state)
        finally:
            with self._condition:
                self._live_streams -= 1
                metrics.live_streams.labels(self.model_id).set(self._live_streams)

    async def transcribe_many(
        self, audios: list[AudioArray], params: TranscribeParams
    ) -> list[EngineOutput]:
        """Outputs for ``audios`` in order. One request's items enter the queue at most
        ``max_batch`` at a time, so a long file never floods the queue for everyone else."""
        outputs: list[EngineOutput] = []
        window = self.batching.max_batch
        for start in range(0, len(audios), window):
            futures = [self._submit(audio, params) for audio in audios[start : start + window]]
            outputs.extend(await asyncio.gather(*futures))
        return outputs

    async def transcribe_each(
        self, audios: list[AudioArray], params: TranscribeParams
    ) -> AsyncIterator[EngineOutput]:
        """Outputs for ``audios`` in order, each as soon as it and those before it are decoded
        (a streamed transcript). Items not yet decoded when the caller stops are dropped."""
        window = self.batching.max_batch
        for start in range(0, len(audios), window):
            futures = [self._submit(audio, params) for audio in audios[start : start + window]]
            try:
                for future in futures:
                    yield await future
            finally:
                for future in futures:
                    future.cancel()

    def _submit(self, audio: AudioArray, params: TranscribeParams) -> asyncio.Future[EngineOutput]:
        loop = asyncio.get_running_loop()
        item = WorkItem(audio=audio, params=params, loop=loop, future=loop.create_future())
        self._enqueue(item)
        return item.future

    def _enqueue(self, item: WorkItem | LiveItem) -> None:
        with self._condition:
            self._pending.append(item)
            metrics.queue_depth.labels(self.model_id).set(len(self._pending))
            self._condition.notify()

    # -- inference thread --------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            self.engine.load()
            metrics.set_model_state(self.model_id, "warming")
            self.engine.warm_up()
            self._ready = True
            metrics.set_model_state(self.model_id, "ready")
            logger.info("model %s is loaded and warmed", self.model_id)
        except InferenceError as error:
            self.error = error.message
            metrics.set_model_state(self.model_id, "failed")
            logger.error("model %s failed to load: %s", self.model_id, error.message)
        except Exception as error:
            self.error = f"{error.__class__.__name__}: {error}"
            metrics.set_model_state(self.model_id, "failed")
            logger.exception("model %s failed to load", self.model_id)
        finally:
            self.loaded.set()
        try:
            while self._ready:
                batch = self._next_batch()
                if batch is None:
                    return
                if batch and isinstance(batch[0], LiveItem):
                    self._run_live(batch[0])
                elif batch:
                    self._run(cast(list[WorkItem], batch))  # only work items batch together
        finally:
            self.engine.close()

    def _next_batch(self) -> list[WorkItem] | list[LiveItem] | None:
        """The oldest item still wanted plus compatible items of similar length; None once stopping.

        Waits up to ``max_wait_ms`` after the oldest item for company, never longer; a live
        stream's piece goes alone and at once.
        """
        wait_seconds = self.batching.max_wait_ms / 1000
        with self._condition:
            while not self._pending and not self._stopping:
                self._condition.wait()
            if self._stopping:
                return None
            deadline = time.perf_counter() + wait_seconds
            while True:
                self._drop_abandoned()
                batch = self._choose_batch()
                remaining = deadline - time.perf_counter()
                # Every item pending may have been abandoned (its caller gone): an empty batch
                # ends the wait, and the serving loop goes back to waiting for work.
                full = bool(batch) and (
                    len(batch) >= self.batching.max_batch or isinstance(batch[0], LiveItem)
                )
                if not batch or full or remaining <= 0 or self._stopping:
                    break
                self._condition.wait(remaining)
            for item in batch:
                self._pending.remove(item)
            metrics.queue_depth.labels(self.model_id).set(len(self._pending))
            return batch

    def _drop_abandoned(self) -> None:
        live = deque(item for item in self._pending if not item.abandoned)
        abandoned = len(self._pending) - len(live)
        if abandoned:
            metrics.dropped.labels(self.model_id, "client_gone").inc(abandoned)
        self._pending = live

    def _choose_batch(self) -> list[WorkItem] | list[LiveItem]:
        """Oldest first (no one starves), then the closest in length that keep padding cheap."""
        if not self._pending:
            return []
        first = self._pending[0]
        if isinstance(first, LiveItem):
            return [first]
        limit = self.batching.max_batch_audio_seconds * SAMPLE_RATE
        candidates = sorted(
            (
                item
                for item in list(self._pending)[1:]
                if isinstance(item, WorkItem) and item.batch_key == first.batch_key
            ),
            key=lambda item: abs(item.audio.size - first.audio.size),
        )
        window = self.engine.fixed_window_seconds
        batch = [first]
        shortest = longest = first.audio.size
        for item in candidates:
            if len(batch) >= self.batching.max_batch:
                break
            low, high = min(shortest, item.audio.size), max(longest, item.audio.size)
            # An engine that pads every item to its fixed window costs the same per item
            # whatever the lengths: max_batch alone bounds its calls.
            if window is None and (
                high * (len(batch) + 1) > limit or low < self.batching.min_fill * high
            ):
                continue
            batch.append(item)
            shortest, longest = low, high
        return batch

    def _run(self, batch: list[WorkItem]) -> None:
        model = self.model_id
        audio_total = sum(item.audio.size for item in batch) / SAMPLE_RATE
        started = time.perf_counter()
        metrics.items_in_progress.labels(model).set(len(batch))
        try:
            outcomes = self.engine.transcribe_batch([item.audio for item in batch], batch[0].params)
        except Exception as error:  # the engine failed as a whole: every item fails
            logger.exception("engine %s failed on a batch of %d", model, len(batch))
            outcomes = [error] * len(batch)
        self._count_call(audio_total, time.perf_counter() - started, list(outcomes))
        for item, outcome in zip(batch, outcomes, strict=True):
            item.loop.call_soon_threadsafe(_deliver, item.future, outcome)
        self.memory.after_batch(audio_total)

    def _run_live(self, item: LiveItem) -> None:
        model = self.model_id
        audio_seconds = item.audio.size / SAMPLE_RATE
        started = time.perf_counter()
        metrics.items_in_progress.labels(model).set(1)
        outcome: str | BaseException
        try:
            outcome = self.engine.decode_live(item.stream.state, item.audio, is_final=item.is_final)
        except Exception as error:
            logger.exception("engine %s failed on a live piece", model)
            outcome = error
        self._count_call(audio_seconds, time.perf_counter() - started, [outcome])
        item.loop.call_soon_threadsafe(_deliver, item.future, outcome)

    def _count_call(self, audio_seconds: float, elapsed: float, outcomes: list[object]) -> None:
        """The metrics of one engine call, a batch or a live piece, once it has returned."""
        model = self.model_id
        metrics.items_in_progress.labels(model).set(0)
        metrics.engine_calls.labels(model).inc()
        metrics.batch_size.labels(model).observe(len(outcomes))
        metrics.inference_seconds.labels(model).observe(elapsed)
        metrics.audio_seconds.labels(model).inc(audio_seconds)
        if audio_seconds > 0:
            metrics.real_time_factor.labels(model).observe(elapsed / audio_seconds)
        for outcome in outcomes:
            failed = isinstance(outcome, BaseException)
            metrics.items.labels(model, "error" if failed else "ok").inc()

    def info(self) -> ModelInfo:
        return self.engine.info().model_copy(update={"loaded": self._ready})


class ModelPool:
    """All models of the node; ready once every one is loaded and warmed."""

    def __init__(
        self,
        engines: list[Engine],
        batching: BatchingSettings | None = None,
        memory: MemoryGuard | None = None,
    ) -> None:
        batching = batching or BatchingSettings()
        memory = memory or MemoryGuard()
        self.hosts = {engine.model_id: ModelHost(engine, batching, memory) for engine in engines}
        self.default_model = engines[0].model_id

    @property
    def error(self) -> str | None:
        errors = [f"{host.model_id}: {host.error}" for host in self.hosts.values() if host.error]
        return "; ".join(errors) or None

    @property
    def ready(self) -> bool:
        return all(host.ready for host in self.hosts.values())

    def start(self) -> None:
        for host in self.hosts.values():
            host.start()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for host in self.hosts.values():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not host.loaded.wait(remaining):
                return False
        return True

    def host_for(self, model_id: str | None) -> ModelHost:
        # The node serves nothing until every configured model is loaded: a half-loaded node is
        # misconfigured or still starting, and /health/ready says so too.
        if self.error is not None:
            raise NotReady(f"This node failed to load its models: {self.error}")
        host = self.hosts.get(model_id or self.default_model)
        if host is None:
            raise ModelNotFound(
                f"The model '{model_id}' does not exist on this node; "
                f"available: {', '.join(self.hosts)}."
            )
        if not self.ready:
            raise NotReady("This node is still loading its models.")
        return host

    def models(self) -> list[ModelInfo]:
        return [host.info() for host in self.hosts.values()]

    def close(self) -> None:
        for host in self.hosts.values():
            host.stop()
