"""What makes two requests the same: tenant, audio MD5, model and every parameter that changes
the transcript (never the response format, which is rendered from the cached result)."""

from __future__ import annotations

import hashlib
import json

import anyio

from inference.protocol import TranscribeParams

# Bump when the cached value's shape changes, so old entries are ignored, not misread.
CACHE_VERSION = 1


# hashlib lets go of the GIL while it hashes more than 2 KB, so a large upload's MD5 on a worker
# thread runs beside the event loop, which goes on serving other requests; inline it would stall
# them all (about 1.5 ms per MB, most of a second for a 512 MB job upload). Below this size the
# hand-off to the thread costs about what it saves.
THREAD_MD5_BYTES = 256 * 1024


def md5_digest(audio: bytes) -> bytes:
    return hashlib.md5(audio, usedforsecurity=False).digest()


async def audio_md5_digest(audio: bytes) -> bytes:
    """The audio's MD5, on a worker thread when the audio is large."""
    if len(audio) < THREAD_MD5_BYTES:
        return md5_digest(audio)
    return await anyio.to_thread.run_sync(md5_digest, audio)


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
