"""The rate-limit dependency of the billed customer routes."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from billing.keys.schemas import AuthenticatedKey
from gateway.deps import TenantKey
from gateway.ratelimits.headers import STATE_KEY
from gateway.ratelimits.service import Admission, RateLimits


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


@dataclass
class HeldSlot:
    """A request's concurrency slot. A streamed response takes it over, so that the slot is
    given back when the stream ends rather than when the route function returns."""

    rate_limits: RateLimits
    admission: Admission
    taken: bool = False

    def take(self) -> Callable[[], Awaitable[None]]:
        """The slot's release, now the caller's to call (once)."""
        self.taken = True
        return functools.partial(self.rate_limits.release, self.admission)


@asynccontextmanager
async def admitted(
    request: Request, caller: AuthenticatedKey, rate_limits: RateLimits
) -> AsyncIterator[None]:
    """The key admitted under its plan's limits (429 otherwise) until the block ends, or until
    a stream that took its slot over ends (``request.state.slot``); the ``x-ratelimit-*``
    headers go on the response."""
    admission = await rate_limits.admit(caller)
    setattr(request.state, STATE_KEY, admission.headers)
    slot = HeldSlot(rate_limits, admission)
    request.state.slot = slot
    try:
        yield
    finally:
        if not slot.taken:
            await rate_limits.release(admission)


# scope="function": the slot is given back as soon as the route function ends, before the
# response goes out, so a client that got its answer finds the slot free.
RateLimitedKey = Annotated[AuthenticatedKey, Depends(admit_within_rate_limits, scope="function")]
