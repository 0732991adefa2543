"""Admin scopes, and which scope reads or writes which data: the one table the admin API and
the console both check against.

A console page or form that shows or changes some data needs exactly the scope the admin API
route for that data needs; both take it from ``READ`` and ``WRITE`` here, never from a list of
their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any


class Scope(StrEnum):
    tenants_read = "tenants:read"
    tenants_write = "tenants:write"
    plans_read = "plans:read"
    plans_write = "plans:write"
    keys_read = "keys:read"
    keys_write = "keys:write"
    billing_read = "billing:read"
    billing_write = "billing:write"
    nodes_read = "nodes:read"
    nodes_write = "nodes:write"
    audit_read = "audit:read"


class Data(StrEnum):
    """What an admin reads or changes."""

    tenants = "tenants"  # a tenant's own fields: name, plan, prepaid, balance, tokens this month
    plans = "plans"
    keys = "keys"
    credit = "credit"  # credit entries: top-ups and adjustments
    invoices = "invoices"
    usage = "usage"  # the ledger's usage: reports, charts, revenue
    nodes = "nodes"
    audit = "audit"
    portal_links = "portal_links"


READ: Mapping[Data, frozenset[Scope]] = {
    Data.tenants: frozenset({Scope.tenants_read}),
    Data.plans: frozenset({Scope.plans_read}),
    Data.keys: frozenset({Scope.keys_read}),
    Data.credit: frozenset({Scope.billing_read}),
    Data.invoices: frozenset({Scope.billing_read}),
    Data.usage: frozenset({Scope.billing_read}),
    Data.nodes: frozenset({Scope.nodes_read}),
    Data.audit: frozenset({Scope.audit_read}),
}

# What a customer portal session does for its tenant: it shows the tenant, its usage, keys and
# invoices, and creates and revokes keys.
PORTAL_READS = (Data.tenants, Data.usage, Data.keys, Data.invoices)
PORTAL_WRITES = (Data.keys,)

_WRITE: dict[Data, frozenset[Scope]] = {
    Data.tenants: frozenset({Scope.tenants_write}),
    Data.plans: frozenset({Scope.plans_write}),
    Data.keys: frozenset({Scope.keys_write}),
    Data.credit: frozenset({Scope.billing_write}),
    Data.invoices: frozenset({Scope.billing_write}),
    Data.nodes: frozenset({Scope.nodes_write}),
}
# A portal link hands its holder a session that does all of the above: only an admin who may do
# every part of it may create one, so a link never grants more than its creator holds.
_WRITE[Data.portal_links] = _WRITE[Data.tenants].union(
    *(READ[data] for data in PORTAL_READS), *(_WRITE[data] for data in PORTAL_WRITES)
)
WRITE: Mapping[Data, frozenset[Scope]] = _WRITE


def missing_scopes(held: Iterable[Scope], needed: Iterable[Scope]) -> list[str]:
    """The scopes of ``needed`` not in ``held``, sorted, for the refusal's message."""
    have = set(held)
    return sorted(scope.value for scope in needed if scope not in have)


def may_read(held: Iterable[Scope], data: Data) -> bool:
    return not missing_scopes(held, READ[data])


def may_write(held: Iterable[Scope], data: Data) -> bool:
    return not missing_scopes(held, WRITE[data])


def parse_scopes(claims: dict[str, Any]) -> frozenset[Scope]:
    raw: Iterable[Any]
    if isinstance(claims.get("scope"), str):
        raw = claims["scope"].split()
    else:
        listed = claims.get("scp", claims.get("scopes", []))
        raw = listed if isinstance(listed, list) else []
    known = {scope.value for scope in Scope}
    return frozenset(Scope(item) for item in raw if isinstance(item, str) and item in known)
