"""A live session's API key, checked again while the session lasts.

A WebSocket session is admitted once, at its handshake, and may then run for
``GATEWAY_REALTIME_MAX_SESSION_SECONDS``. So that revoking a key (or its expiry, or the end of a
rotation's grace period) ends the sessions it opened within seconds rather than an hour, each
session looks its key up again every ``GATEWAY_REALTIME_KEY_RECHECK_SECONDS`` in the ledger,
past the per-process key cache, as the routes would after it expires. A refused key ends the
session with an ``invalid_api_key`` error and close code 4401; what was delivered before stays
billed, the item in flight is given back (``gateway/billed/stream.py`` settles both).
"""

from __future__ import annotations

import logging

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import State

from billing.db import Database
from billing.errors import InvalidApiKey, NotFound
from billing.keys.schemas import AuthenticatedKey
from billing.keys.service import caller_for_tenant_key
from gateway.errors import AuthError

logger = logging.getLogger(__name__)

# An application-defined WebSocket close code (4000-4999): HTTP's 401, as "invalid_api_key".
KEY_REFUSED_CLOSE_CODE = 4401


def look_up_again(database: Database, caller: AuthenticatedKey) -> None:
    """The session's key by its prefix (a session opened with a client token never saw the
    secret): revoked, expired or deleted raises ``AuthError``."""
    try:
        with database.transaction() as session:
            caller_for_tenant_key(session, caller.tenant_id, caller.key_prefix)
    except (InvalidApiKey, NotFound) as error:
        raise AuthError(
            error.message if isinstance(error, InvalidApiKey) else "This API key no longer exists."
        ) from None


async def key_refused(state: State, caller: AuthenticatedKey) -> AuthError:
    """Returns, with the refusal, once the session's key is no longer valid; runs until
    cancelled otherwise. A ledger that cannot be reached keeps the session going: the check
    is tried again next interval."""
    interval = state.settings.realtime_key_recheck_seconds
    while True:
        await anyio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(look_up_again, state.database, caller)
        except AuthError as refusal:
            # New requests with the key are refused at once on this replica too.
            state.key_cache.evict(caller.key_prefix)
            logger.info("key %s refused during a live session: %s", caller.key_prefix, refusal)
            return refusal
        except SQLAlchemyError as error:
            logger.warning("could not check key %s again: %s", caller.key_prefix, error)
