from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from billing.db import Database
from billing.errors import AlreadyExists, InvalidApiKey, NotFound
from billing.keys.service import authenticate, create_api_key, list_api_keys, revoke_api_key
from billing.models import ApiKey
from billing.models.types import utcnow
from billing.tenants.service import create_tenant
from tests.fixtures.factories import TEST_ACTOR


@pytest.fixture
def tenant(database: Database) -> str:
    with database.transaction() as session:
        create_tenant(session, "acme", actor=TEST_ACTOR)
    return "acme"


class TestApiKeys:
    def test_secret_is_never_stored(self, database: Database, tenant: str) -> None:
        with database.transaction() as session:
            created = create_api_key(session, tenant, actor=TEST_ACTOR)
        with database.transaction() as session:
            row = session.exec(select(ApiKey)).one()
        assert created.secret.startswith("sk-asrgw-")
        assert created.secret not in (row.secret_hash, row.prefix)
        assert created.secret.removeprefix("sk-asrgw-").startswith(row.prefix)

    def test_authenticates_to_tenant_and_plan(self, database: Database, tenant: str) -> None:
        with database.transaction() as session:
            created = create_api_key(session, tenant, actor=TEST_ACTOR)
        with database.transaction() as session:
            caller = authenticate(session, created.secret)
        assert caller.tenant_name == "acme"
        assert caller.plan.name == "standard"
        assert caller.plan.price_per_1k_tokens_micros == 20_000

    @pytest.mark.parametrize(
        "mangle",
        [
            lambda secret: secret[:-1] + ("A" if secret[-1] != "A" else "B"),  # right prefix
            lambda secret: "sk-asrgw-000000000000_" + secret.split("_", 1)[1],
            lambda _secret: "sk-not-ours",
            lambda _secret: "",
        ],
    )
    def test_rejects_wrong_keys(self, database: Database, tenant: str, mangle) -> None:  # type: ignore[no-untyped-def]
        with database.transaction() as session:
            created = create_api_key(session, tenant, actor=TEST_ACTOR)
        with database.transaction() as session, pytest.raises(InvalidApiKey):
            authenticate(session, mangle(created.secret))

    def test_revoked_key_stops_working(self, database: Database, tenant: str) -> None:
        with database.transaction() as session:
            created = create_api_key(session, tenant, actor=TEST_ACTOR)
        with database.transaction() as session:
            revoked = revoke_api_key(session, created.key.prefix, actor=TEST_ACTOR)
        assert revoked.revoked_at is not None
        with database.transaction() as session, pytest.raises(InvalidApiKey, match="revoked"):
            authenticate(session, created.secret)

    def test_expired_key_stops_working(self, database: Database, tenant: str) -> None:
        with database.transaction() as session:
            created = create_api_key(
                session, tenant, expires_in=timedelta(days=1), actor=TEST_ACTOR
            )
        with database.transaction() as session:
            authenticate(session, created.secret)
        with database.transaction() as session, pytest.raises(InvalidApiKey, match="expired"):
            authenticate(session, created.secret, now=utcnow() + timedelta(days=2))

    def test_listing_shows_status_not_secret(self, database: Database, tenant: str) -> None:
        with database.transaction() as session:
            first = create_api_key(session, tenant, name="ci", actor=TEST_ACTOR)
            create_api_key(session, tenant, name="prod", actor=TEST_ACTOR)
            revoke_api_key(session, first.secret, actor=TEST_ACTOR)
        with database.transaction() as session:
            keys = list_api_keys(session, tenant)
        assert [(key.name, key.revoked_at is not None) for key in keys] == [
            ("ci", True),
            ("prod", False),
        ]

    def test_unknown_tenant_and_duplicate_tenant(self, database: Database, tenant: str) -> None:
        with database.transaction() as session, pytest.raises(NotFound):
            create_api_key(session, "nobody", actor=TEST_ACTOR)
        with database.transaction() as session, pytest.raises(AlreadyExists):
            create_tenant(session, tenant, actor=TEST_ACTOR)
