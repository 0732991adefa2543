"""Errors of the web console, in the customer API's envelope (pages render them as HTML).

```
GatewayError
├── SignInRequired     401 console_sign_in_required (a page answers 303 to the sign-in page)
├── SignInFailed       401 sign_in_failed (wrong user or password, refused SSO token)
├── CsrfRejected       403 csrf_token_invalid
├── PortalLinkInvalid  410 portal_link_invalid (unknown, used or expired)
├── ReauthRequired     401 reauthentication_required (a page asks for the password again)
│   └── ReauthFailed   401 reauthentication_failed (wrong; counted as a failed sign-in)
└── RetryLater
    ├── SignInThrottled  429 sign_in_throttled (+ Retry-After; the address or the account)
    └── SignInBusy       503 sign_in_busy (+ Retry-After; every password-check slot taken)
```
A console caller without the scope of a page or write gets ``PermissionDenied`` (403
``permission_denied``), as on the admin API.
"""

from __future__ import annotations

from gateway.errors import GatewayError, RetryLater


class SignInRequired(GatewayError):
    status_code = 401
    code = "console_sign_in_required"
    error_type = "invalid_request_error"


class SignInFailed(GatewayError):
    status_code = 401
    code = "sign_in_failed"
    error_type = "invalid_request_error"


class CsrfRejected(GatewayError):
    status_code = 403
    code = "csrf_token_invalid"
    error_type = "invalid_request_error"


class PortalLinkInvalid(GatewayError):
    status_code = 410
    code = "portal_link_invalid"
    error_type = "invalid_request_error"


class SignInThrottled(RetryLater):
    status_code = 429
    code = "sign_in_throttled"
    error_type = "requests"


class ReauthRequired(GatewayError):
    """A sensitive write whose caller has not proved who they are recently. ``fields`` are the
    write's own form fields, which the re-authentication page sends again with the proof;
    ``means`` is how this caller proves it: ``password``, ``sso`` (a fresh token) or ``link``
    (a portal session cannot: it needs a new portal link)."""

    status_code = 401
    code = "reauthentication_required"
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, fields: list[tuple[str, str]], means: str) -> None:
        super().__init__(message)
        self.fields = fields
        self.means = means


class ReauthFailed(ReauthRequired):
    code = "reauthentication_failed"


class SignInBusy(RetryLater):
    status_code = 503
    code = "sign_in_busy"
    error_type = "server_error"
