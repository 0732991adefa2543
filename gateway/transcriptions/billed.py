"""What every billed audio route does once its input is parsed: transcribe and bill, render the
route's own response from the canonical result, log what the client was told, and do it once
per ``Idempotency-Key``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from billing.db import Database
from billing.keys.schemas import AuthenticatedKey
from billing.usage.schemas import UsageCharge
from gateway.cache.service import ResultCache
from gateway.config import GatewaySettings
from gateway.deps import (
    DatabaseDep,
    NodesDep,
    RequestId,
    ResultCacheDep,
    SettingsDep,
    TranscribeKey,
)
from gateway.idempotency import respond_once
from gateway.nodes import NodePool
from gateway.ratelimits.dependency import RateLimitedKey
from gateway.transcriptions.schemas import BilledTranscription, TranscriptionInput
from gateway.transcriptions.service import log_returned_charge, transcribe_and_bill


@dataclass(frozen=True)
class BilledCall:
    """The dependencies of a billed route, resolved in the order they must run (see
    ``billed_call``)."""

    request: Request
    caller: AuthenticatedKey
    request_id: str
    settings: GatewaySettings
    nodes: NodePool
    database: Database
    cache: ResultCache | None

    async def once(
        self,
        audio: bytes,
        parameters: dict[str, object],
        work: Callable[[], Awaitable[tuple[Response, UsageCharge]]],
    ) -> Response:
        """``work()``'s response; its charge is logged as returned to the client."""

        async def respond() -> Response:
            response, charge = await work()
            await log_returned_charge(self.database, self.caller.tenant_id, charge)
            return response

        return await respond_once(
            self.request,
            self.database,
            self.caller.tenant_id,
            self.request_id,
            audio,
            parameters,
            respond,
            wait_seconds=self.settings.node_timeout_seconds,
        )

    async def transcribe(
        self,
        transcription: TranscriptionInput,
        render: Callable[[BilledTranscription], Response],
        parameters: dict[str, object],
    ) -> Response:
        """Transcribe (or answer from the cache), bill, and ``render`` the response."""

        async def work() -> tuple[Response, UsageCharge]:
            billed = await transcribe_and_bill(
                self.request_id,
                self.caller,
                transcription,
                nodes=self.nodes,
                database=self.database,
                settings=self.settings,
                cache=self.cache,
            )
            return render(billed), billed.charge

        identity = {
            "model": transcription.model,
            "language": transcription.language,
            "prompt": transcription.prompt,
            "granularities": sorted(transcription.granularities),
            **parameters,
        }
        return await self.once(transcription.audio, identity, work)


async def billed_call(
    request: Request,
    caller: TranscribeKey,
    _admitted: RateLimitedKey,
    request_id: RequestId,
    settings: SettingsDep,
    nodes: NodesDep,
    database: DatabaseDep,
    cache: ResultCacheDep,
) -> BilledCall:
    """The key and its scope first, then the rate limits (before the upload is looked at),
    then the rest. An ``async def``: nothing here blocks, so no worker thread is taken."""
    return BilledCall(request, caller, request_id, settings, nodes, database, cache)


BilledCallDep = Annotated[BilledCall, Depends(billed_call)]
