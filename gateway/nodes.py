"""Talking to inference nodes over one shared ``httpx.AsyncClient``.

Nodes are tried in rotation. A node that cannot be reached, answers 502/503/504 (loading,
overloaded, a proxy in front of it failing) or does not serve the model is skipped for the next
one; a node that accepted the request and then timed out is not retried, since it may still be
working on it.
"""

from __future__ import annotations

import itertools
import logging

import httpx

from gateway.errors import (
    AudioTooLong,
    FileTooLarge,
    GatewayError,
    InvalidAudio,
    InvalidRequest,
    ModelNotFound,
    UnsupportedLanguage,
    UpstreamUnavailable,
)
from inference.protocol import (
    MODELS_PATH,
    READY_PATH,
    TRANSCRIBE_PATH,
    ErrorCode,
    ModelInfo,
    ModelList,
    TranscribeParams,
    TranscriptionResult,
)

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({502, 503, 504})


class NodeClient:
    def __init__(self, urls: list[str], client: httpx.AsyncClient, *, secret: str = "") -> None:
        if not urls:
            raise ValueError("at least one inference node URL is needed")
        self.urls = urls
        self.client = client
        self.headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self._rotation = itertools.cycle(range(len(urls)))

    def _order(self) -> list[str]:
        start = next(self._rotation)
        return self.urls[start:] + self.urls[:start]

    async def transcribe(
        self, audio: bytes, filename: str, content_type: str, params: TranscribeParams
    ) -> TranscriptionResult:
        form = {
            "language": params.language,
            "word_timestamps": "true" if params.word_timestamps else "false",
            "itn": "true" if params.itn else "false",
        }
        if params.model:
            form["model"] = params.model
        if params.hotwords:
            form["hotwords"] = params.hotwords
        failures: list[str] = []
        model_missing: GatewayError | None = None
        for url in self._order():
            try:
                response = await self.client.post(
                    f"{url}{TRANSCRIBE_PATH}",
                    files={"file": (filename, audio, content_type)},
                    data=form,
                    headers=self.headers,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                failures.append(f"{url}: {error.__class__.__name__}")
                continue
            except httpx.TransportError as error:
                logger.warning("node %s failed mid-request: %r", url, error)
                raise UpstreamUnavailable(
                    "The inference node did not complete the request; nothing was billed. "
                    "Retry later."
                ) from error
            if response.status_code in RETRYABLE_STATUSES:
                failures.append(f"{url}: HTTP {response.status_code}")
                continue
            if response.is_success:
                return TranscriptionResult.model_validate_json(response.content)
            refusal = node_error(url, response)
            if isinstance(refusal, ModelNotFound):
                # Pools may be heterogeneous: another node may serve the model.
                model_missing = refusal
                continue
            raise refusal
        if model_missing is not None and not failures:
            raise model_missing
        logger.warning("no inference node could serve the request: %s", "; ".join(failures))
        raise UpstreamUnavailable(
            "No inference node is available to serve the request; nothing was billed. Retry later."
        )

    async def list_models(self) -> list[ModelInfo]:
        models: dict[str, ModelInfo] = {}
        for url in self.urls:
            try:
                response = await self.client.get(f"{url}{MODELS_PATH}", headers=self.headers)
            except httpx.TransportError:
                continue
            if response.is_success:
                for model in ModelList.model_validate_json(response.content).data:
                    models.setdefault(model.id, model)
        return list(models.values())

    async def any_ready(self) -> bool:
        for url in self.urls:
            try:
                response = await self.client.get(f"{url}{READY_PATH}", timeout=2.0)
            except httpx.TransportError:
                continue
            if response.status_code == 200:
                return True
        return False


def node_error(url: str, response: httpx.Response) -> GatewayError:
    """Map a node's 4xx/5xx onto the customer-facing error."""
    try:
        detail = response.json()["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "", response.text[:200]
    if code == ErrorCode.invalid_audio:
        return InvalidAudio(message, param="file")
    if code == ErrorCode.unsupported_language:
        return UnsupportedLanguage(message, param="language")
    if code == ErrorCode.model_not_found:
        return ModelNotFound(message, param="model")
    if code == ErrorCode.file_too_large:
        return FileTooLarge(message, param="file")
    if code == ErrorCode.audio_too_long:
        return AudioTooLong(message, param="file")
    if response.status_code == 401:
        logger.error("node %s refused the gateway's node secret", url)
        return UpstreamUnavailable("The inference node refused the gateway; nothing was billed.")
    if response.status_code < 500:
        return InvalidRequest(message or "The inference node rejected the request.")
    logger.warning("node %s answered %s: %s", url, response.status_code, message)
    return UpstreamUnavailable("The inference node failed; nothing was billed. Retry later.")
