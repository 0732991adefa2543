"""Language detection as a billed order: its output is the language code, billed in the plan's
token unit like a transcript.

The node listens to the first 30 seconds only (as whisper-asr-webservice does), so that is what
is held and recorded as the request's audio, whatever the file's length.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.responses import Response

from gateway.audio_probe import probe_heard_ms
from gateway.billed.call import BilledCall
from gateway.billed.dispatch import Billed, Order, Usage
from gateway.transcriptions.service import AudioDigest, refuse_disallowed_model
from inference.protocol import LanguageDetection

# What the node listens to (inference.app LANGUAGE_DETECTION_SECONDS).
DETECTION_AUDIO_MS = 30_000


async def detect_language(
    call: BilledCall,
    audio: bytes,
    filename: str,
    content_type: str,
    model: str,
    render: Callable[[Billed[LanguageDetection]], Response],
) -> Response:
    md5 = AudioDigest(audio)

    async def prepare() -> Order[LanguageDetection]:
        refuse_disallowed_model(call.caller, model)
        # Only what the node listens to is measured: a longer file costs no more to measure.
        heard_ms = await probe_heard_ms(audio, DETECTION_AUDIO_MS)

        async def produce() -> LanguageDetection:
            return await call.nodes.detect_language(
                audio, filename, content_type, model, audio_ms=heard_ms
            )

        def usage_of(detection: LanguageDetection) -> Usage:
            return Usage(text=detection.language, model=detection.model, audio_ms=heard_ms)

        return Order(heard_ms, produce, usage_of)

    return await call.respond(
        audio_md5=md5,
        identity={"model": model},
        result_type=LanguageDetection,
        prepare=prepare,
        render=render,
    )
