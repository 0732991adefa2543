"""``BilledCall``: the dependency of every billed audio route. It resolves the key, its scope
and rate limits first (before the upload is looked at), and runs the route's work through the
money sequence once per ``Idempotency-Key``:

```
no key ─────────────────────────────────────▶ run_billed ──▶ render
key ──claim──▶ owned (new, or a lapsed lease taken over) ──▶ run_billed under the key's
         │                                                    request id ──▶ render
         ├──▶ settled ──▶ the stored result and the ledger's charge, rendered as asked,
         │               billed nothing more
         └──▶ another attempt holds it ──▶ wait (bounded) ──▶ 409 + Retry-After
```
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Header, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel

from billing.idempotency.service import Lease, Settled
from billing.keys.schemas import AuthenticatedKey, KeyScope
from gateway.billed.dispatch import Billed, Order, RequestBilling, ledger_refusals, run_billed
from gateway.billed.idempotency import KeyClaims, fingerprint_md5, new_lease
from gateway.billed.leases import LeaseKeeper
from gateway.billed.responses import REPLAYED_HEADER, told_charge
from gateway.cache.service import ResultCache
from gateway.config import GatewaySettings
from gateway.deps import ApiKeyHeaderValue, BearerCredentials, caller_of, refuse_without_scope
from gateway.ledger import Ledger
from gateway.nodes import NodePool
from gateway.ratelimits.dependency import admitted

R = TypeVar("R", bound=BaseModel)
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retries with the same key are billed once: the first result is replayed.",
    ),
]


@dataclass(frozen=True)
class BilledCall:
    request: Request
    caller: AuthenticatedKey
    request_id: str
    settings: GatewaySettings
    nodes: NodePool
    ledger: Ledger
    keys: KeyClaims
    leases: LeaseKeeper
    cache: ResultCache | None

    @classmethod
    def of(cls, request: Request, caller: AuthenticatedKey) -> BilledCall:
        """The call of an authenticated, admitted ``caller``, with the app's shared parts."""
        state = request.app.state
        return cls(
            request,
            caller,
            request.state.request_id,
            state.settings,
            state.nodes,
            state.ledger,
            state.key_claims,
            state.lease_keeper,
            state.result_cache,
        )

    async def respond(
        self,
        *,
        audio_md5: Callable[[], Awaitable[bytes]],
        identity: Mapping[str, object],
        result_type: type[R],
        prepare: Callable[[], Awaitable[Order[R]]],
        render: Callable[[Billed[R]], Response],
    ) -> Response:
        """``render`` of the billed result of ``prepare()``'s order, once per Idempotency-Key.
        ``identity``: every parameter that changes the result (never the response format: a
        replay renders the stored result in whatever format the retry asks for).
        ``audio_md5`` is awaited only when a key needs the audio's fingerprint."""
        key = self.request.headers.get("idempotency-key")
        if not key:
            billing = self.billing_of(self.request_id)
            response = render(await run_billed(billing, await prepare(), result_type))
            return await self._returned(response)
        lease = new_lease(self.caller.tenant_id, key)
        request_fingerprint = fingerprint_md5(
            await audio_md5(), {"route": self.request.url.path, **identity}
        )
        claim = await self.keys.claim(lease, request_fingerprint, self.request_id)
        if isinstance(claim, Settled):
            return await self._returned(await self._replay(claim, result_type, render))
        billing = self.billing_of(claim.request_id, lease, taken_over=claim.taken_over)
        with self.keys.working(lease):
            try:
                order = await prepare()
            except BaseException:
                await self.ledger.give_up_key(lease)
                raise
            response = render(await run_billed(billing, order, result_type))
            return await self._returned(response)

    async def _returned(self, response: Response) -> Response:
        """Record the charge the built response tells the client (its ``x-billing-*``
        headers), apart from the ledger row that billed it: reconciliation compares them."""
        told = told_charge(response)
        if told is None:
            raise AssertionError("a billed response carries its x-billing-* headers")
        with anyio.CancelScope(shield=True), ledger_refusals():
            await self.ledger.record_returned(
                told.request_id,
                self.caller.tenant_id,
                billed_tokens=told.billed_tokens,
                cost_micros=told.cost_micros,
            )
        return response

    def billing_of(
        self, request_id: str, lease: Lease | None = None, *, taken_over: bool = False
    ) -> RequestBilling:
        """How this request writes its money (``gateway.billed.dispatch.RequestBilling``)."""
        return RequestBilling(
            ledger=self.ledger,
            leases=self.leases,
            client_gone=self.request.is_disconnected,
            request_id=request_id,
            caller=self.caller,
            key_lease=lease,
            taken_over=taken_over,
        )

    async def _replay(
        self, settled: Settled, result_type: type[R], render: Callable[[Billed[R]], Response]
    ) -> Response:
        if settled.legacy_response is not None:
            status_code, media_type, headers, body = settled.legacy_response
            return Response(
                content=body,
                status_code=status_code,
                media_type=media_type,
                headers={**json.loads(headers), REPLAYED_HEADER: "true"},
            )
        assert settled.result is not None  # a completed key always stored its result
        charge, cached = await self.ledger.usage_of(settled.request_id)
        billed = Billed(
            result_type.model_validate_json(settled.result), charge, cached, replayed=True
        )
        response = render(billed)
        response.headers[REPLAYED_HEADER] = "true"
        return response


@asynccontextmanager
async def billed_call(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None,
    x_api_key: str | None,
) -> AsyncIterator[BilledCall]:
    """The key and its scope first, then the rate limits (before the upload is looked at),
    then the rest. The concurrency slot is held until the block ends."""
    state = request.app.state
    caller = await caller_of(request, state.database, bearer, x_api_key)
    refuse_without_scope(caller, KeyScope.transcribe)
    async with admitted(request, caller, state.rate_limits):
        yield BilledCall.of(request, caller)


async def get_billed_call(
    request: Request,
    bearer: BearerCredentials,
    x_api_key: ApiKeyHeaderValue,
    idempotency_key: IdempotencyKeyHeader = None,
) -> AsyncIterator[BilledCall]:
    """``billed_call`` as one dependency rather than a tree of them (the two credential
    readers aside, which put the key's security schemes in the OpenAPI document): each one
    FastAPI resolves costs the hot path time."""
    # Declared for the OpenAPI document and its bound (the ledger's column); BilledCall reads
    # it from the request, as the console's playground, which sends none, does too.
    del idempotency_key
    async with billed_call(request, bearer, x_api_key) as call:
        yield call


# scope="function": the slot is given back as soon as the route function ends, before the
# response goes out, so a client that got its answer finds the slot free.
BilledCallDep = Annotated[BilledCall, Depends(get_billed_call, scope="function")]
