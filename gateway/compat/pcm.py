"""``encode=false`` on ``/asr`` means the body is raw audio: 16-bit little-endian PCM, mono,
16 kHz, as whisper-asr-webservice reads it. The gateway wraps it in a WAV header so the probe
and the node read it like any file."""

from __future__ import annotations

import struct

SAMPLE_RATE = 16_000


def wav_from_pcm16(pcm: bytes, sample_rate: int = SAMPLE_RATE) -> bytes:
    usable = pcm[: len(pcm) - len(pcm) % 2]
    header = b"RIFF" + struct.pack("<I", 36 + len(usable)) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return header + fmt + b"data" + struct.pack("<I", len(usable)) + usable
