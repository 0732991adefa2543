"""The floor for any Python gateway: a FastAPI endpoint that only reads the multipart upload of
``POST /v1/audio/transcriptions`` (the same form the gateway takes) and answers a small JSON.

    python -m uvicorn bench.bare_upload:app --port 8002
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Form, UploadFile

app = FastAPI()


@app.post("/v1/audio/transcriptions")
async def read_upload(
    file: Annotated[UploadFile, File()], model: Annotated[str, Form()]
) -> dict[str, object]:
    """Read the upload and answer; no auth, no billing, no upstream."""
    audio = await file.read()
    return {"text": "", "model": model, "bytes": len(audio)}


@app.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}
