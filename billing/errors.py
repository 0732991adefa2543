"""Errors raised by the billing services.

```
BillingError
├── InvalidApiKey      the presented key is missing, unknown, revoked or expired
├── NotFound           a tenant, plan or key that does not exist
├── AlreadyExists      a unique name taken
└── InvalidValue       a value no plan or key may have
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
