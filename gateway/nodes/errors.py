"""Nodes' refusals mapped onto customer errors, and the pool's own admin-facing error."""

from __future__ import annotations

import logging

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
from gateway.nodes.client import NodeResponse
from inference.protocol import ErrorCode

logger = logging.getLogger(__name__)


class NodeNotFound(GatewayError):
    status_code = 404
    code = "node_not_found"
    error_type = "invalid_request_error"


class NodeNotAllowed(GatewayError):
    """A node URL whose host the operator has not allowed (``allowed.py``)."""

    status_code = 403
    code = "node_not_allowed"
    error_type = "invalid_request_error"


def node_error(url: str, response: NodeResponse) -> GatewayError:
    """Map a node's 4xx/5xx onto the customer-facing error."""
    try:
        detail = response.json()["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "", response.text[:200]
    return mapped_node_error(url, response.status_code, code, message)


def mapped_node_error(url: str, status_code: int, code: str, message: str) -> GatewayError:
    """A node's refusal (its HTTP status or its equivalent, its code and message) as the
    customer-facing error."""
    if code == ErrorCode.invalid_audio:
        return InvalidAudio(message, param="file")
    if code == ErrorCode.unsupported_language:
        return UnsupportedLanguage(message, param="language")
    if code == ErrorCode.language_detection_unsupported:
        return InvalidRequest(message, param="model", code="language_detection_unsupported")
    if code == ErrorCode.model_not_found:
        return ModelNotFound(message, param="model")
    if code == ErrorCode.file_too_large:
        return FileTooLarge(message, param="file")
    if code == ErrorCode.audio_too_long:
        return AudioTooLong(message, param="file")
    if code == ErrorCode.live_unsupported:
        return InvalidRequest(message, param="model", code="live_transcription_unsupported")
    if status_code == 401 or code == ErrorCode.unauthorized:
        logger.error("node %s refused the gateway's node secret", url)
        return UpstreamUnavailable("The inference node refused the gateway; nothing was billed.")
    if status_code < 500:
        return InvalidRequest(message or "The inference node rejected the request.")
    logger.warning("node %s answered %s: %s", url, status_code, message)
    return UpstreamUnavailable("The inference node failed; nothing was billed. Retry later.")
