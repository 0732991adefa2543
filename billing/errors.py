"""Errors raised by the billing services.

```
BillingError
├── InvalidApiKey      the presented key is missing, unknown, revoked or expired
├── NotFound           a tenant, plan or key that does not exist
├── AlreadyExists      a unique name taken
├── InvalidValue       a value no plan or key may have
├── InsufficientQuota  the request's worst-case cost exceeds the credit or quota left
├── Conflict           an idempotency key reused for a different operation
└── LedgerUnavailable  the ledger database cannot be reached or is busy (retry later)
```
Callers map them onto their own transport (HTTP envelope, CLI exit code).
"""

from __future__ import annotations


class BillingError(Exception):
    """Base class of every billing error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidApiKey(BillingError):
    """The key cannot authenticate anyone."""


class NotFound(BillingError):
    """The named record does not exist."""


class AlreadyExists(BillingError):
    """A record with that unique name exists already."""


class InvalidValue(BillingError):
    """A value outside what the ledger accepts."""


class InsufficientQuota(BillingError):
    """Not enough prepaid credit or monthly quota left for the worst case of this request."""


class Conflict(BillingError):
    """The same idempotency key was used before for something else."""


class LedgerUnavailable(BillingError):
    """The ledger database is unreachable, or too busy to take a write in time (SQLite's
    "database is locked"). Nothing was written; the caller may retry."""
