from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from billing.credits.service import add_credit
from billing.db import Database
from billing.errors import AlreadyExists, InvalidApiKey, InvalidValue, NotFound
from billing.keys.schemas import KeyScope
from billing.keys.service import (
    authenticate,
    create_api_key,
    list_api_keys,
    revoke_api_key,
    rotate_api_key,
)
from billing.models import ApiKey
from billing.models.types import utcnow
from billing.periods import period_bounds
from billing.plans.service import create_plan
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


class TestKeyLifecycle:
    def test_rotation_keeps_the_old_key_for_the_grace_period(
        self, database: Database, tenant: str
    ) -> None:
        with database.transaction() as session:
            old = create_api_key(
                session,
                tenant,
                name="prod",
                scopes=[KeyScope.transcribe],
                allowed_models=["paraformer-zh"],
                actor=TEST_ACTOR,
            )
        with database.transaction() as session:
            rotation = rotate_api_key(
                session, old.key.prefix, grace=timedelta(hours=1), actor=TEST_ACTOR
            )
        new = rotation.new
        assert new.key.name == "prod"
        assert new.key.scopes == [KeyScope.transcribe]
        assert new.key.allowed_models == ["paraformer-zh"]
        assert new.key.rotated_from_id == old.key.id
        assert rotation.old.expires_at is not None
        with database.transaction() as session:
            assert authenticate(session, old.secret).key_prefix == old.key.prefix
            assert authenticate(session, new.secret).key_prefix == new.key.prefix
            later = utcnow() + timedelta(hours=1, seconds=1)
            with pytest.raises(InvalidApiKey, match="expired"):
                authenticate(session, old.secret, now=later)
            assert authenticate(session, new.secret, now=later).tenant_name == "acme"

    def test_zero_grace_ends_the_old_key_now_and_dead_keys_do_not_rotate(
        self, database: Database, tenant: str
    ) -> None:
        with database.transaction() as session:
            old = create_api_key(session, tenant, actor=TEST_ACTOR)
            rotate_api_key(session, old.key.prefix, grace=timedelta(0), actor=TEST_ACTOR)
        with database.transaction() as session, pytest.raises(InvalidApiKey, match="expired"):
            authenticate(session, old.secret)
        with database.transaction() as session, pytest.raises(InvalidValue, match="revoked or"):
            rotate_api_key(session, old.key.prefix, grace=timedelta(0), actor=TEST_ACTOR)

    def test_a_shorter_expiry_is_kept(self, database: Database, tenant: str) -> None:
        with database.transaction() as session:
            old = create_api_key(session, tenant, expires_in=timedelta(minutes=5), actor=TEST_ACTOR)
            rotation = rotate_api_key(
                session, old.key.prefix, grace=timedelta(days=7), actor=TEST_ACTOR
            )
        assert rotation.old.expires_at == old.key.expires_at
        assert rotation.new.key.expires_at == old.key.expires_at

    def test_scopes_and_models(self, database: Database, tenant: str) -> None:
        with database.transaction() as session:
            everything = create_api_key(session, tenant, actor=TEST_ACTOR)
            narrow = create_api_key(
                session,
                tenant,
                scopes=[KeyScope.usage_read],
                allowed_models=[" m1 ", "m2", "m1"],
                actor=TEST_ACTOR,
            )
            caller = authenticate(session, narrow.secret)
            assert authenticate(session, everything.secret).scopes == frozenset(KeyScope)
        assert caller.scopes == frozenset({KeyScope.usage_read})
        assert caller.allowed_models == frozenset({"m1", "m2"})
        assert caller.allows_model("m2")
        assert not caller.allows_model("m3")
        for bad in ({"scopes": []}, {"allowed_models": [" "]}, {"allowed_models": ["a,b"]}):
            with pytest.raises(InvalidValue), database.transaction() as session:
                create_api_key(session, tenant, actor=TEST_ACTOR, **bad)  # type: ignore[arg-type]


class TestServiceBounds:
    """The CLI and the console reach the services without the HTTP schemas: the services
    refuse what the ledger cannot hold with ``InvalidValue``, never an overflow."""

    def test_key_lifetime_past_a_century(self, database: Database, tenant: str) -> None:
        with database.transaction() as session, pytest.raises(InvalidValue, match="36,500"):
            create_api_key(session, tenant, expires_in=timedelta(days=3_000_000), actor=TEST_ACTOR)

    def test_rotation_grace_past_ninety_days(self, database: Database, tenant: str) -> None:
        with database.transaction() as session:
            created = create_api_key(session, tenant, actor=TEST_ACTOR)
        with database.transaction() as session, pytest.raises(InvalidValue, match="grace"):
            rotate_api_key(
                session, created.key.prefix, grace=timedelta(days=10_000), actor=TEST_ACTOR
            )

    def test_plan_and_credit_amounts(self, database: Database, tenant: str) -> None:
        with database.transaction() as session, pytest.raises(InvalidValue, match="price"):
            create_plan(session, "huge", price_per_1k_tokens_micros=2**63, actor=TEST_ACTOR)
        with database.transaction() as session, pytest.raises(InvalidValue, match="tokens"):
            create_plan(
                session,
                "greedy",
                price_per_1k_tokens_micros=1,
                max_tokens_per_audio_second=2**63,
                actor=TEST_ACTOR,
            )
        with database.transaction() as session, pytest.raises(InvalidValue, match="amount"):
            add_credit(session, tenant, 2**63, idempotency_key="k", actor=TEST_ACTOR)

    def test_the_last_period(self) -> None:
        assert period_bounds("9998-12")[1].year == 9999
        with pytest.raises(InvalidValue):
            period_bounds("9999-12")
