"""Model hosting: each engine is owned by one inference thread.

FunASR's ``generate()`` is not thread-safe, and a GPU gains nothing from two threads fighting
over it, so every model gets a single-thread executor; requests queue to it and the event loop
never blocks on inference.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from inference.audio import AudioArray
from inference.engines.base import Engine, EngineOutput
from inference.errors import InferenceError, ModelNotFound, NotReady
from inference.protocol import ModelInfo, TranscribeParams

logger = logging.getLogger(__name__)


class ModelHost:
    """One engine and the thread that owns it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"infer-{engine.model_id}"
        )
        self.ready = False

    def load_and_warm(self) -> None:
        """Runs on the model's own thread."""
        self.engine.load()
        self.engine.warm_up()
        self.ready = True

    async def transcribe(self, audio: AudioArray, params: TranscribeParams) -> EngineOutput:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.engine.transcribe, audio, params)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class ModelPool:
    """All models of the node; ready once every one is loaded and warmed."""

    def __init__(self, engines: list[Engine]) -> None:
        self.hosts = {engine.model_id: ModelHost(engine) for engine in engines}
        self.default_model = engines[0].model_id
        self.error: str | None = None
        self._loaded = threading.Event()

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and self.error is None

    def start_loading(self) -> threading.Thread:
        thread = threading.Thread(target=self._load_all, name="model-loader", daemon=True)
        thread.start()
        return thread

    def _load_all(self) -> None:
        try:
            for host in self.hosts.values():
                host.executor.submit(host.load_and_warm).result()
                logger.info("model %s is loaded and warmed", host.engine.model_id)
        except InferenceError as error:
            self.error = error.message
            logger.error("model loading failed: %s", error.message)
        except Exception as error:
            self.error = f"{error.__class__.__name__}: {error}"
            logger.exception("model loading failed")
        finally:
            self._loaded.set()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

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
        return [host.engine.info() for host in self.hosts.values()]

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()
