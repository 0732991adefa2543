"""Admin JWTs: HS256 from the configured secret, RS256/ES256 through a JWKS, scopes per route."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from billing.db import Database
from gateway.admin.auth import Scope
from gateway.cli.main import cli
from gateway.config import DEFAULT_ADMIN_JWT_SECRET, GatewaySettings
from tests.fixtures.processes import free_port
from tests.gateway.admin_client import (
    ADMIN_SECRET,
    admin_client,
    admin_settings,
    bearer,
    token,
)

ISSUER = "https://sso.example.com/"
AUDIENCE = "asrgw-admin"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values = {
        "sub": "ops@example.com",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + 300,
        "scope": "tenants:read audit:read",
    }
    return {name: value for name, value in (values | overrides).items() if value is not None}


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


class TestSharedSecretTokens:
    @pytest.fixture
    def settings(self) -> GatewaySettings:
        return admin_settings()

    def test_a_minted_token_with_the_scope_is_admitted(
        self, database: Database, settings: GatewaySettings
    ) -> None:
        with admin_client(database, settings) as client:
            response = client.get("/admin/tenants", headers=bearer(token(settings)))
        assert response.status_code == 200
        assert response.json() == []

    @pytest.mark.parametrize(
        ("headers", "fragment"),
        [
            ({}, "needs a bearer token"),
            ({"Authorization": "Basic YWRtaW46YWRtaW4="}, "needs a bearer token"),
            ({"Authorization": "Bearer not.a.jwt"}, "malformed"),
        ],
    )
    def test_missing_or_malformed_tokens_get_401(
        self, database: Database, settings: GatewaySettings, headers: dict[str, str], fragment: str
    ) -> None:
        with admin_client(database, settings) as client:
            response = client.get("/admin/tenants", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        error = error_of(response)
        assert error["code"] == "invalid_token"
        assert fragment in error["message"]

    def test_expired_token(self, database: Database, settings: GatewaySettings) -> None:
        expired = token(settings, ttl_seconds=-120)  # past the 30 s leeway
        with admin_client(database, settings) as client:
            response = client.get("/admin/tenants", headers=bearer(expired))
        assert response.status_code == 401
        assert "expired" in error_of(response)["message"]

    @pytest.mark.parametrize(
        ("overrides", "fragment"),
        [
            ({"aud": "some-other-service"}, "not meant for this service"),
            ({"iss": "https://evil.example.com/"}, "not issued by"),
            ({"exp": None}, "'exp'"),
            ({"sub": None}, "'sub'"),
            ({"aud": None}, "'aud'"),
        ],
    )
    def test_audience_issuer_and_required_claims_are_checked(
        self,
        database: Database,
        settings: GatewaySettings,
        overrides: dict[str, Any],
        fragment: str,
    ) -> None:
        forged = jwt.encode(
            claims(**({"iss": settings.admin_jwt_issuer} | overrides)),
            ADMIN_SECRET,
            algorithm="HS256",
        )
        with admin_client(database, settings) as client:
            response = client.get("/admin/tenants", headers=bearer(forged))
        assert response.status_code == 401
        assert fragment in error_of(response)["message"]

    def test_a_token_signed_with_another_secret(
        self, database: Database, settings: GatewaySettings
    ) -> None:
        forged = jwt.encode(claims(iss=settings.admin_jwt_issuer), "x" * 40, algorithm="HS256")
        with admin_client(database, settings) as client:
            response = client.get("/admin/tenants", headers=bearer(forged))
        assert response.status_code == 401
        assert "signature" in error_of(response)["message"].lower()

    @pytest.mark.parametrize("algorithm", ["none", "HS512"])
    def test_unpinned_algorithms_are_refused(
        self, database: Database, settings: GatewaySettings, algorithm: str
    ) -> None:
        def part(value: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        header = part({"alg": algorithm, "typ": "JWT"})
        payload = part(claims(iss=settings.admin_jwt_issuer, scope=" ".join(Scope)))
        unsigned = f"{header}.{payload}."
        with admin_client(database, settings) as client:
            response = client.get("/admin/tenants", headers=bearer(unsigned))
        assert response.status_code == 401
        assert f"signed with '{algorithm}' are not accepted" in error_of(response)["message"]

    def test_a_missing_scope_is_403(self, database: Database, settings: GatewaySettings) -> None:
        reader = token(settings, [Scope.tenants_read])
        with admin_client(database, settings) as client:
            allowed = client.get("/admin/tenants", headers=bearer(reader))
            refused = client.post("/admin/tenants", json={"name": "acme"}, headers=bearer(reader))
            audit = client.get("/admin/audit", headers=bearer(reader))
        assert allowed.status_code == 200
        assert refused.status_code == 403
        assert error_of(refused)["code"] == "permission_denied"
        assert "tenants:write" in error_of(refused)["message"]
        assert audit.status_code == 403

    def test_the_cli_mints_tokens_the_gateway_accepts(
        self, database: Database, settings: GatewaySettings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("GATEWAY_ADMIN_JWT_SECRET", ADMIN_SECRET)
        result = CliRunner().invoke(
            cli, ["admin", "token", "--subject", "bob", "--scope", "audit:read"]
        )
        assert result.exit_code == 0, result.output
        minted = result.output.strip()
        decoded = jwt.decode(minted, ADMIN_SECRET, algorithms=["HS256"], audience=AUDIENCE)
        assert decoded["sub"] == "bob"
        assert decoded["scope"] == "audit:read"
        with admin_client(database, settings) as client:
            assert client.get("/admin/audit", headers=bearer(minted)).status_code == 200
            assert client.get("/admin/tenants", headers=bearer(minted)).status_code == 403


class JwksServer:
    """A loopback identity provider that publishes one RSA and one EC public key."""

    def __init__(self) -> None:
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        keys = [
            self._jwk(jwt.algorithms.RSAAlgorithm, self.rsa_key.public_key(), "rsa-1", "RS256"),
            self._jwk(jwt.algorithms.ECAlgorithm, self.ec_key.public_key(), "ec-1", "ES256"),
        ]
        document = json.dumps({"keys": keys}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(document)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def _jwk(algorithm: Any, public_key: Any, kid: str, alg: str) -> dict[str, Any]:
        jwk = json.loads(algorithm.to_jwk(public_key))
        return {**jwk, "kid": kid, "alg": alg, "use": "sig"}

    def rsa_public_pem(self) -> bytes:
        return self.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TestJwksTokens:
    @pytest.fixture
    def provider(self) -> Iterator[JwksServer]:
        server = JwksServer()
        yield server
        server.close()

    @pytest.fixture
    def settings(self, provider: JwksServer) -> GatewaySettings:
        # SSO only: no shared secret, so HS256 is closed.
        return admin_settings(
            admin_jwt_secret="", admin_jwks_url=provider.url, admin_jwt_issuer=ISSUER
        )

    def test_rs256_and_es256_tokens_from_the_provider_are_admitted(
        self, database: Database, provider: JwksServer, settings: GatewaySettings
    ) -> None:
        rs256 = jwt.encode(claims(), provider.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
        es256 = jwt.encode(claims(), provider.ec_key, algorithm="ES256", headers={"kid": "ec-1"})
        with admin_client(database, settings) as client:
            for signed in (rs256, es256):
                response = client.get("/admin/tenants", headers=bearer(signed))
                assert response.status_code == 200, response.text

    def test_an_hs256_token_signed_with_the_rsa_public_key_is_refused(
        self, database: Database, provider: JwksServer, settings: GatewaySettings
    ) -> None:
        # The algorithm-confusion attack: the public key used as an HMAC secret.
        header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
        payload = claims(scope=" ".join(Scope))
        import hashlib
        import hmac

        def part(value: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        signing_input = f"{part(header)}.{part(payload)}"
        signature = hmac.new(provider.rsa_public_pem(), signing_input.encode(), hashlib.sha256)
        forged = (
            f"{signing_input}.{base64.urlsafe_b64encode(signature.digest()).rstrip(b'=').decode()}"
        )
        with admin_client(database, settings) as client:
            response = client.get("/admin/tenants", headers=bearer(forged))
        assert response.status_code == 401
        assert "'HS256' are not accepted" in error_of(response)["message"]

    def test_a_key_the_provider_does_not_publish_is_refused(
        self, database: Database, settings: GatewaySettings
    ) -> None:
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": "rsa-9"})
        with admin_client(database, settings) as client:
            response = client.get("/admin/tenants", headers=bearer(forged))
        assert response.status_code == 401
        assert error_of(response)["code"] == "invalid_token"

    def test_a_token_from_the_right_kid_but_wrong_key_is_refused(
        self, database: Database, settings: GatewaySettings
    ) -> None:
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": "rsa-1"})
        with admin_client(database, settings) as client:
            response = client.get("/admin/tenants", headers=bearer(forged))
        assert response.status_code == 401

    def test_an_unreachable_provider_is_503_not_401(
        self, database: Database, provider: JwksServer
    ) -> None:
        settings = admin_settings(
            admin_jwt_secret="",
            admin_jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json",
            admin_jwt_issuer=ISSUER,
        )
        signed = jwt.encode(claims(), provider.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
        with admin_client(database, settings) as client:
            response = client.get("/admin/tenants", headers=bearer(signed))
        assert response.status_code == 503
        assert error_of(response)["code"] == "auth_unavailable"
        assert response.headers["retry-after"] == "5"


class TestSettings:
    def test_production_refuses_the_default_secret(self) -> None:
        with pytest.raises(ValidationError, match="built-in default"):
            GatewaySettings(environment="production")
        assert GatewaySettings().admin_jwt_secret == DEFAULT_ADMIN_JWT_SECRET  # development

    def test_production_refuses_a_short_secret(self) -> None:
        with pytest.raises(ValidationError, match="at least 32"):
            GatewaySettings(environment="production", admin_jwt_secret="short")

    def test_some_way_to_verify_tokens_is_required(self) -> None:
        with pytest.raises(ValidationError, match="needs GATEWAY_ADMIN_JWT_SECRET"):
            GatewaySettings(admin_jwt_secret="")

    def test_jwks_algorithms_must_be_asymmetric(self) -> None:
        with pytest.raises(ValidationError, match="not one of"):
            GatewaySettings(admin_jwks_algorithms="RS256,HS256")


class CountingJwks:
    """A JWKS endpoint in place of the network (httpx.MockTransport) that counts its fetches."""

    def __init__(self, provider: JwksServer) -> None:
        self.provider = provider
        self.fetches = 0
        self.now = 1_000.0
        self.lock = threading.Lock()

    def handle(self, request: Any) -> Any:
        import httpx

        assert request.url.path == "/jwks.json"
        with self.lock:
            self.fetches += 1
        public_key = self.provider.rsa_key.public_key()
        key = JwksServer._jwk(jwt.algorithms.RSAAlgorithm, public_key, "rsa-1", "RS256")
        return httpx.Response(200, json={"keys": [key]})

    def verifier(self, **overrides: Any) -> Any:
        import httpx

        from gateway.admin.auth import TokenVerifier

        settings = admin_settings(
            admin_jwt_secret="",
            admin_jwks_url="https://sso.example.com/jwks.json",
            admin_jwt_issuer=ISSUER,
            **overrides,
        )
        verifier = TokenVerifier(settings, jwks_transport=httpx.MockTransport(self.handle))
        assert verifier.jwks is not None
        verifier.jwks.clock = lambda: self.now
        return verifier


class TestJwksRefetchLimit:
    @pytest.fixture
    def provider(self) -> Iterator[JwksServer]:
        server = JwksServer()
        yield server
        server.close()

    @staticmethod
    def unknown_kid_token(provider: JwksServer, kid: str) -> str:
        return jwt.encode(claims(), provider.rsa_key, algorithm="RS256", headers={"kid": kid})

    def test_unknown_kids_fetch_once_per_interval(self, provider: JwksServer) -> None:
        from gateway.errors import AdminAuthError

        jwks = CountingJwks(provider)
        verifier = jwks.verifier(admin_jwks_refetch_seconds=30)
        for attempt in range(20):
            with pytest.raises(AdminAuthError, match="unknown kid") as refused:
                verifier.verify(self.unknown_kid_token(provider, f"made-up-{attempt}"))
            assert refused.value.code == "invalid_token"
        assert jwks.fetches == 1
        jwks.now += 29.9
        with pytest.raises(AdminAuthError):
            verifier.verify(self.unknown_kid_token(provider, "made-up-x"))
        assert jwks.fetches == 1
        jwks.now += 0.1
        with pytest.raises(AdminAuthError):
            verifier.verify(self.unknown_kid_token(provider, "made-up-y"))
        assert jwks.fetches == 2
        # The known key keeps working between refetches, and costs no fetch.
        known = jwt.encode(claims(), provider.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
        assert verifier.verify(known).subject == "ops@example.com"
        assert jwks.fetches == 2

    def test_concurrent_unknown_kids_share_one_fetch(self, provider: JwksServer) -> None:
        jwks = CountingJwks(provider)
        verifier = jwks.verifier()
        start = threading.Barrier(8)
        codes: list[str] = []

        def attempt(index: int) -> None:
            from gateway.errors import AdminAuthError

            start.wait()
            try:
                verifier.verify(self.unknown_kid_token(provider, f"made-up-{index}"))
            except AdminAuthError as error:
                codes.append(error.code)

        threads = [threading.Thread(target=attempt, args=(index,)) for index in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert codes == ["invalid_token"] * 8
        assert jwks.fetches == 1

    def test_an_unknown_kid_through_the_api_is_401_without_a_second_fetch(
        self, database: Database, provider: JwksServer
    ) -> None:
        fetches: list[str] = []
        original = provider.server.RequestHandlerClass.do_GET  # type: ignore[attr-defined]

        def counted(handler: Any) -> None:
            fetches.append(handler.path)
            original(handler)

        provider.server.RequestHandlerClass.do_GET = counted  # type: ignore[attr-defined]
        settings = admin_settings(
            admin_jwt_secret="", admin_jwks_url=provider.url, admin_jwt_issuer=ISSUER
        )
        with admin_client(database, settings) as client:
            for attempt in range(5):
                forged = self.unknown_kid_token(provider, f"made-up-{attempt}")
                response = client.get("/admin/tenants", headers=bearer(forged))
                assert response.status_code == 401
                assert error_of(response)["code"] == "invalid_token"
            signed = self.unknown_kid_token(provider, "rsa-1")
            assert client.get("/admin/tenants", headers=bearer(signed)).status_code == 200
        assert len(fetches) == 1
