"""The rate-limit dependency of the billed customer routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, Request

from billing.keys.schemas import AuthenticatedKey
from gateway.deps import TenantKey
from gateway.ratelimits.headers import STATE_KEY
from gateway.ratelimits.service import RateLimits


async def get_rate_limits(request: Request) -> RateLimits:
    rate_limits: RateLimits = request.app.state.rate_limits
    return rate_limits


async def admit_within_rate_limits(
    request: Request,
    caller: TenantKey,
    rate_limits: Annotated[RateLimits, Depends(get_rate_limits)],
) -> AsyncIterator[AuthenticatedKey]:
    """Right after authentication, before the upload is looked at: 429 past the key's plan
    limits. The request's concurrency slot is held until the route returns or raises."""
    async with admitted(request, caller, rate_limits):
        yield caller


@asynccontextmanager
async def admitted(
    request: Request, caller: AuthenticatedKey, rate_limits: RateLimits
) -> AsyncIterator[None]:
    """The key admitted under its plan's limits (429 otherwise) until the block ends; the
    ``x-ratelimit-*`` headers go on the response."""
    admission = await rate_limits.admit(caller)
    setattr(request.state, STATE_KEY, admission.headers)
    try:
        yield
    finally:
        await rate_limits.release(admission)


# scope="function": the slot is given back as soon as the route function ends, before the
# response goes out, so a client that got its answer finds the slot free.
RateLimitedKey = Annotated[AuthenticatedKey, Depends(admit_within_rate_limits, scope="function")]
