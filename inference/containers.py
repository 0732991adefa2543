"""Which containers an upload may be, and the one way it is opened: the whitelist the gateway's
probe and the node's decoder share, so that both accept and refuse exactly the same files.

Uploads are untrusted. Left to itself, FFmpeg guesses a format from the bytes and may pick a
demuxer that reads other files (``concat``, ``hls``, ``dash``, ``image2``), a subtitle or data
format, or a raw guess. Here it may pick only a real audio or video container, and no demuxer may
open anything beyond the upload itself (no protocol at all: the upload is read from memory).

Importing this module needs only the standard library; PyAV is imported when a file is opened,
so the gateway imports it without the node's stack (``tests/gateway/test_packaging.py``).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.container import InputContainer

# FFmpeg demuxer names (``ffmpeg -demuxers``); a demuxer with several names, such as
# "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm", is accepted by any one of them.
ACCEPTED_DEMUXERS = (
    "wav",
    "w64",
    "flac",
    "mp3",
    "ogg",
    "mov",
    "matroska",
    "aac",
    "aiff",
    "caf",
    "au",
    "asf",
    "avi",
    "amr",
    "ac3",
    "eac3",
    "wv",
    "flv",
    "mpeg",
    "mpegts",
)
ACCEPTED_DESCRIPTION = (
    "WAV, W64, FLAC, MP3, Ogg (Vorbis, Opus, Speex, FLAC), MP4/M4A/MOV/3GP, Matroska/WebM, "
    "AAC (ADTS), AIFF, CAF, AU, ASF/WMA, AVI, AMR, AC-3, E-AC-3, WavPack, FLV, MPEG-PS, MPEG-TS"
)
# FFmpeg matches protocol names against this list; no protocol is called this, so a demuxer that
# tries to open another file or URL is refused.
NO_PROTOCOL = "none"
CONTAINER_OPTIONS = {
    "format_whitelist": ",".join(ACCEPTED_DEMUXERS),
    "protocol_whitelist": NO_PROTOCOL,
}


class UnreadableAudio(Exception):
    """The upload cannot be opened as audio; the message says why, for the customer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def open_audio(data: bytes) -> tuple[InputContainer, AudioStream]:
    """``data`` opened from memory as an accepted container, and its first audio stream (the
    one the gateway measures and the node decodes). The caller closes the container."""
    if not data:
        raise UnreadableAudio("The audio file is empty (0 bytes).")
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r", container_options=CONTAINER_OPTIONS)
    except av.error.ArgumentError:
        # What FFmpeg answers when the format it recognized is not on the whitelist.
        raise UnreadableAudio(
            "The file's container is not an accepted audio or video format, or its header is "
            f"invalid. Accepted: {ACCEPTED_DESCRIPTION}."
        ) from None
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as error:
        raise UnreadableAudio(
            "The file is not a recognized audio or video container, or it is truncated or "
            f"corrupt ({error.__class__.__name__})."
        ) from None
    if not container.streams.audio:
        kinds = sorted({str(stream.type) for stream in container.streams})
        container.close()
        found = f"it contains only {', '.join(kinds)}" if kinds else "it contains no streams"
        raise UnreadableAudio(f"The file has no audio stream ({found}).")
    return container, container.streams.audio[0]
