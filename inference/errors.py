"""Errors of the node, each with its HTTP status and stable code.

```
InferenceError                 500 internal_error
├── InvalidAudio               400 invalid_audio
├── InvalidRequest             400 invalid_request
├── FileTooLarge               413 file_too_large
├── AudioTooLong               413 audio_too_long
├── ModelNotFound              404 model_not_found
├── UnsupportedLanguage        400 unsupported_language
├── DetectionUnsupported       400 language_detection_unsupported
├── LiveUnsupported            400 live_transcription_unsupported
├── Unauthorized               401 unauthorized
├── NotReady                   503 node_not_ready (+ Retry-After)
├── NodeOverloaded             503 node_overloaded (+ Retry-After)
├── NodeDraining               503 node_draining (+ Retry-After: shutting down)
├── ClientGone                 499 client_closed_request (nobody is listening)
└── ModelLoadError             (start-up only: the node refuses to turn ready)
```
"""

from __future__ import annotations

from inference.protocol import ErrorCode


class InferenceError(Exception):
    status_code = 500
    code = ErrorCode.internal_error
    error_type = "server_error"

    retry_after_seconds: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidAudio(InferenceError):
    status_code = 400
    code = ErrorCode.invalid_audio
    error_type = "invalid_request_error"


class InvalidRequest(InferenceError):
    status_code = 400
    code = ErrorCode.invalid_request
    error_type = "invalid_request_error"


class FileTooLarge(InferenceError):
    status_code = 413
    code = ErrorCode.file_too_large
    error_type = "invalid_request_error"


class AudioTooLong(InferenceError):
    status_code = 413
    code = ErrorCode.audio_too_long
    error_type = "invalid_request_error"


class ModelNotFound(InferenceError):
    status_code = 404
    code = ErrorCode.model_not_found
    error_type = "invalid_request_error"


class UnsupportedLanguage(InferenceError):
    status_code = 400
    code = ErrorCode.unsupported_language
    error_type = "invalid_request_error"


class DetectionUnsupported(InferenceError):
    status_code = 400
    code = ErrorCode.language_detection_unsupported
    error_type = "invalid_request_error"


class LiveUnsupported(InferenceError):
    """Live (chunk by chunk) decoding needs an online model such as paraformer-zh-streaming."""

    status_code = 400
    code = ErrorCode.live_unsupported
    error_type = "invalid_request_error"


class Unauthorized(InferenceError):
    status_code = 401
    code = ErrorCode.unauthorized
    error_type = "authentication_error"


class NotReady(InferenceError):
    status_code = 503
    code = ErrorCode.not_ready
    error_type = "server_error"
    retry_after_seconds = 5


class NodeOverloaded(InferenceError):
    status_code = 503
    code = ErrorCode.node_overloaded
    error_type = "server_error"
    retry_after_seconds = 1


class NodeDraining(InferenceError):
    """The node is shutting down (``inference.shutdown``); another node will take the work."""

    status_code = 503
    code = ErrorCode.node_draining
    error_type = "server_error"
    retry_after_seconds = 1


class ClientGone(InferenceError):
    status_code = 499
    code = ErrorCode.client_closed_request
    error_type = "invalid_request_error"


class ModelLoadError(InferenceError):
    """A model could not be loaded; the message says which and what to do."""
