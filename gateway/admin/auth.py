"""Admin authentication: JWT bearer tokens with scopes.

Two ways to sign, each pinned to its algorithms:
- HS256 with ``GATEWAY_ADMIN_JWT_SECRET`` (the embedded default; ``asrgw admin token`` mints
  tokens with it; set the secret empty to turn HS256 off);
- RS256/ES256 with keys from ``GATEWAY_ADMIN_JWKS_URL`` (an SSO provider's JWKS), fetched and
  cached by ``JwksKeys``, which refetches for an unknown ``kid`` at a bounded rate.

A token's ``alg`` header picks the path, and only a configured path is open: ``none``, an HS256
token where only JWKS is configured (the classic confusion of an RSA public key for an HMAC
secret) or any other algorithm is refused. ``exp``, ``aud``, ``iss`` and ``sub`` are required
and checked. Scopes come from the OAuth ``scope`` claim (space-separated) or a ``scp``/``scopes``
list; unknown ones are ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from billing.audit.schemas import Actor
from gateway.admin.jwks import JwksKeys
from gateway.admin.scopes import READ, WRITE, Data, missing_scopes
from gateway.admin.scopes import Scope as Scope  # where the rest of the gateway imports it from
from gateway.admin.scopes import parse_scopes as parse_scopes
from gateway.config import GatewaySettings
from gateway.errors import AdminAuthError, PermissionDenied

HS256 = "HS256"
REQUIRED_CLAIMS = ["exp", "aud", "iss", "sub"]


class AdminClaims(BaseModel):
    subject: str
    scopes: frozenset[Scope]
    expires_at: datetime

    def actor(self, request_id: str | None = None) -> Actor:
        return Actor(name=self.subject, request_id=request_id)


class TokenVerifier:
    """Verifies admin tokens against the configured secret and JWKS."""

    def __init__(
        self, settings: GatewaySettings, *, jwks_transport: httpx.BaseTransport | None = None
    ) -> None:
        self.secret = settings.admin_jwt_secret
        self.audience = settings.admin_jwt_audience
        self.issuer = settings.admin_jwt_issuer
        self.leeway = settings.admin_jwt_leeway_seconds
        self.jwks_algorithms = settings.admin_jwks_algorithm_list
        self.jwks = (
            JwksKeys(
                settings.admin_jwks_url,
                refetch_seconds=settings.admin_jwks_refetch_seconds,
                transport=jwks_transport,
            )
            if settings.admin_jwks_url
            else None
        )

    def _key_for(self, token: str, algorithm: str) -> tuple[Any, list[str]]:
        if algorithm == HS256 and self.secret:
            return self.secret, [HS256]
        if algorithm in self.jwks_algorithms and self.jwks is not None:
            kid = jwt.get_unverified_header(token).get("kid")
            return self.jwks.key_for(kid if isinstance(kid, str) else None), self.jwks_algorithms
        raise AdminAuthError(f"Tokens signed with {algorithm!r} are not accepted here.")

    def verify(self, token: str) -> AdminClaims:
        try:
            algorithm = str(jwt.get_unverified_header(token).get("alg", ""))
        except jwt.InvalidTokenError:
            raise AdminAuthError("The admin token is malformed.") from None
        key, algorithms = self._key_for(token, algorithm)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise AdminAuthError("The admin token has expired.") from None
        except jwt.InvalidAudienceError:
            raise AdminAuthError(
                f"The admin token is not meant for this service (audience {self.audience!r})."
            ) from None
        except jwt.InvalidIssuerError:
            raise AdminAuthError(f"The admin token was not issued by {self.issuer!r}.") from None
        except jwt.MissingRequiredClaimError as error:
            raise AdminAuthError(f"The admin token lacks the {error.claim!r} claim.") from None
        except jwt.InvalidTokenError as error:
            raise AdminAuthError(f"The admin token is invalid: {error}.") from None
        return AdminClaims(
            subject=str(claims["sub"]),
            scopes=parse_scopes(claims),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )


def mint_token(
    settings: GatewaySettings,
    subject: str,
    scopes: Iterable[Scope],
    *,
    ttl_seconds: int,
    now: float | None = None,
) -> str:
    """An HS256 admin token signed with the configured secret."""
    if not settings.admin_jwt_secret:
        raise ValueError("GATEWAY_ADMIN_JWT_SECRET is empty: HS256 admin tokens are turned off")
    issued_at = int(now if now is not None else time.time())
    claims = {
        "sub": subject,
        "aud": settings.admin_jwt_audience,
        "iss": settings.admin_jwt_issuer,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
        "scope": " ".join(sorted(scope.value for scope in scopes)),
    }
    return jwt.encode(claims, settings.admin_jwt_secret, algorithm=HS256)


# The admin token as a security scheme of the OpenAPI document; it refuses nothing itself
# (auto_error=False), so a missing token gets the envelope's 401 from ``bearer_token``.
admin_bearer = HTTPBearer(
    scheme_name="AdminToken",
    bearerFormat="JWT",
    description="An admin JWT with scopes (`asrgw admin token`, or an SSO provider's).",
    auto_error=False,
)


def bearer_token(authorization: str | None) -> str:
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise AdminAuthError(
            "The admin API needs a bearer token: Authorization: Bearer <JWT> "
            "(mint one with `asrgw admin token`)."
        )
    return credentials.strip()


def require_scopes(*needed: Scope) -> Callable[..., AdminClaims]:
    """A dependency that admits a valid admin token holding every scope in ``needed``. A plain
    ``def``: a JWKS fetch blocks, so FastAPI runs it in a worker thread."""

    def admit(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
    ) -> AdminClaims:
        verifier: TokenVerifier = request.app.state.token_verifier
        presented = f"Bearer {credentials.credentials}" if credentials is not None else None
        claims = verifier.verify(bearer_token(presented))
        missing = missing_scopes(claims.scopes, needed)
        if missing:
            raise PermissionDenied(f"This admin token lacks the scope {', '.join(missing)}.")
        return claims

    return admit


# Each route needs the scopes of the data it reads or writes (``gateway.admin.scopes``).
TenantsRead = Annotated[AdminClaims, Depends(require_scopes(*READ[Data.tenants]))]
TenantsWrite = Annotated[AdminClaims, Depends(require_scopes(*WRITE[Data.tenants]))]
PlansRead = Annotated[AdminClaims, Depends(require_scopes(*READ[Data.plans]))]
PlansWrite = Annotated[AdminClaims, Depends(require_scopes(*WRITE[Data.plans]))]
KeysRead = Annotated[AdminClaims, Depends(require_scopes(*READ[Data.keys]))]
KeysWrite = Annotated[AdminClaims, Depends(require_scopes(*WRITE[Data.keys]))]
CreditRead = Annotated[AdminClaims, Depends(require_scopes(*READ[Data.credit]))]
CreditWrite = Annotated[AdminClaims, Depends(require_scopes(*WRITE[Data.credit]))]
BillingRead = Annotated[AdminClaims, Depends(require_scopes(*READ[Data.invoices]))]
BillingWrite = Annotated[AdminClaims, Depends(require_scopes(*WRITE[Data.invoices]))]
UsageRead = Annotated[AdminClaims, Depends(require_scopes(*READ[Data.usage]))]
NodesRead = Annotated[AdminClaims, Depends(require_scopes(*READ[Data.nodes]))]
NodesWrite = Annotated[AdminClaims, Depends(require_scopes(*WRITE[Data.nodes]))]
AuditRead = Annotated[AdminClaims, Depends(require_scopes(*READ[Data.audit]))]
PortalLinksWrite = Annotated[AdminClaims, Depends(require_scopes(*WRITE[Data.portal_links]))]
