"""What makes two requests the same: tenant, audio MD5, model and every parameter that changes
the transcript (never the response format, which is rendered from the cached result)."""

from __future__ import annotations

import hashlib
import json

from inference.protocol import TranscribeParams

# Bump when the cached value's shape changes, so old entries are ignored, not misread.
CACHE_VERSION = 1


def audio_md5(audio: bytes) -> str:
    return hashlib.md5(audio, usedforsecurity=False).hexdigest()


def result_cache_key(tenant_id: int | None, md5: str, params: TranscribeParams) -> str:
    """``tenant_id`` None is the global (cross-tenant) mode."""
    identity = {
        "v": CACHE_VERSION,
        "tenant": tenant_id if tenant_id is not None else "*",
        "md5": md5,
        "model": params.model,
        "language": params.language,
        "hotwords": params.hotwords,
        "word_timestamps": params.word_timestamps,
        "itn": params.itn,
        "temperature": params.temperature or None,
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
