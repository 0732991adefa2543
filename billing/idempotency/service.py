"""Idempotency keys as leases: one request id per key, one attempt working it at a time, and
the settled result kept for replays.

```
claim ──▶ in_progress, leased to attempt A ──settle (same transaction)──▶ completed (result)
              │  ▲ renew while A runs
              │  └──────────── a retry takes the lease over and runs under the same id ──┐
              ├── A's lease lapses (A's gateway died) ───────────────────────────────────┤
              └── A failed before settling (its client got the error) ──▶ failed ────────┘
```

A key is never freed once its settlement committed: the record and its result stay until the
retention period ends (``purge_steps``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from billing.errors import Conflict
from billing.idempotency import statements as sql
from billing.statements import Fetch, Step, Steps


@dataclass(frozen=True, slots=True)
class Owned:
    """This attempt holds the key's lease and works the request ``request_id`` (its own, or
    the original one when it took over a lapsed lease)."""

    request_id: str
    taken_over: bool


@dataclass(frozen=True, slots=True)
class Settled:
    """The key's request settled: replay it from the ledger."""

    request_id: str
    result: str | None  # the canonical result, JSON
    # A response recorded before results were stored (replayed byte for byte).
    legacy_response: tuple[int, str, str, str] | None = None


@dataclass(frozen=True, slots=True)
class Busy:
    """Another attempt holds a live lease on the key."""

    request_id: str
    lease_expires_at: datetime | None


Claim = Owned | Settled | Busy


@dataclass(frozen=True, slots=True)
class Lease:
    tenant_id: int
    key: str
    token: str


def claim_steps(
    dialect: str,
    lease: Lease,
    fingerprint: str,
    request_id: str,
    *,
    now: datetime,
    until: datetime,
) -> Steps[Claim]:
    """Claim ``lease.key`` for ``request_id`` until ``until``, take over a lapsed lease, or
    tell who has it. The same key with another request is a ``Conflict``. One statement when
    the key is new or its lease lapsed; a read besides otherwise."""
    values = {
        "claim_tenant_id": lease.tenant_id,
        "claim_key": lease.key,
        "claim_fingerprint": fingerprint,
        "claim_state": "in_progress",
        "claim_request_id": request_id,
        "claim_lease_token": lease.token,
        "claim_lease_expires_at": until,
        "claim_created_at": now,
        "now": now,
    }
    owner = yield Step(sql.claim_or_take_over(dialect), values, Fetch.scalar)
    if owner is not None:
        return Owned(owner, taken_over=owner != request_id)
    row = yield Step(sql.read(), {"tenant": lease.tenant_id, "record_key": lease.key}, Fetch.first)
    if row is None:  # purged between the two statements: claim it afresh
        return (
            yield from claim_steps(dialect, lease, fingerprint, request_id, now=now, until=until)
        )
    if row.fingerprint != fingerprint:
        raise Conflict("This Idempotency-Key was already used with a different file or parameters.")
    if row.state == "completed":
        legacy = None
        if row.result is None and row.body is not None:
            legacy = (row.status_code or 200, row.media_type or "application/json",
                      row.headers or "{}", row.body)  # fmt: skip
        return Settled(row.request_id, row.result, legacy)
    return Busy(row.request_id, row.lease_expires_at)


def renew_steps(lease: Lease, until: datetime) -> Steps[bool]:
    """Extend the lease; False when this attempt no longer holds it (taken over, completed)."""
    params = {
        "tenant": lease.tenant_id,
        "record_key": lease.key,
        "token": lease.token,
        "until": until,
    }
    return (yield Step(sql.renew(), params, Fetch.first)) is not None


def give_up_steps(lease: Lease) -> Steps[None]:
    """This attempt failed before settling: the key is ``failed``, and a retry takes it over
    at once."""
    params = {"tenant": lease.tenant_id, "record_key": lease.key, "token": lease.token}
    yield Step(sql.give_up(), params)


def purge_steps(before: datetime) -> Steps[None]:
    yield Step(sql.purge(), {"before": before})
