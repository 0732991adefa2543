"""``asrgw admin user|session|portal-link``: the web console's users, sessions and portal links,
straight against the ledger database, audited as ``cli:<os user>``."""

from __future__ import annotations

import click

from billing.audit.service import cli_actor
from gateway.cli.admin import admin, print_table, run
from gateway.config import GatewaySettings
from gateway.console.portal_links.service import create_portal_link, portal_link_lifetime
from gateway.console.roles import Role
from gateway.console.sessions.service import list_open_sessions, revoke_session, revoke_subject
from gateway.console.users.service import create_user, list_users, set_disabled, set_password
from gateway.errors import InvalidRequest

PASSWORD_HELP = (
    "Prompted for (twice) when not given; never pass it on a shared machine's command line."
)


@admin.group()
def user() -> None:
    """Admin users of the web console (argon2-hashed passwords, roles)."""


@user.command("create")
@click.argument("username")
@click.option(
    "--role",
    type=click.Choice([role.value for role in Role]),
    default=Role.operator.value,
    show_default=True,
    help="owner: every admin scope; operator: day-to-day writes, no plan prices; "
    "finance: read-only.",
)
@click.password_option(help=PASSWORD_HELP)
def user_create(username: str, role: str, password: str) -> None:
    """Create a console user."""
    created = run(lambda session: create_user(session, username, role, password, actor=cli_actor()))
    click.echo(f"admin user {created.username} created ({created.role})")


@user.command("list")
def user_list() -> None:
    """List console users."""
    users = run(list_users)
    print_table(
        ["username", "role", "created", "password changed", "status"],
        [
            [
                item.username,
                item.role,
                item.created_at.isoformat(timespec="seconds"),
                item.password_changed_at.isoformat(timespec="seconds"),
                "disabled" if item.disabled_at else "active",
            ]
            for item in users
        ],
    )


@user.command("set-password")
@click.argument("username")
@click.password_option(help=PASSWORD_HELP)
def user_set_password(username: str, password: str) -> None:
    """Give a user a new password; every open session of theirs ends."""
    ended = run(lambda session: set_password(session, username, password, actor=cli_actor()))
    click.echo(f"password of {username} changed; {ended} open session(s) ended")


@user.command("disable")
@click.argument("username")
def user_disable(username: str) -> None:
    """Disable a user: signing in is refused and every open session ends."""
    run(lambda session: set_disabled(session, username, True, actor=cli_actor()))
    click.echo(f"admin user {username} disabled")


@user.command("enable")
@click.argument("username")
def user_enable(username: str) -> None:
    """Let a disabled user sign in again."""
    run(lambda session: set_disabled(session, username, False, actor=cli_actor()))
    click.echo(f"admin user {username} enabled")


@admin.group()
def session() -> None:
    """Open web console sessions."""


@session.command("list")
def session_list() -> None:
    """Open sessions (not revoked, not past their absolute end)."""
    sessions = run(list_open_sessions)
    print_table(
        ["id", "kind", "subject", "signed in", "last seen", "ends", "ip"],
        [
            [
                str(item.id),
                item.kind,
                item.subject,
                item.created_at.isoformat(timespec="seconds"),
                item.last_seen_at.isoformat(timespec="seconds"),
                item.expires_at.isoformat(timespec="seconds"),
                item.client_ip or "-",
            ]
            for item in sessions
        ],
    )


@session.command("revoke")
@click.option("--session", "session_id", type=int, default=None, help="End this session (id).")
@click.option("--user", "username", default=None, help="End every session of this admin.")
@click.option("--tenant", "tenant_name", default=None, help="End every portal session of a tenant.")
def session_revoke(session_id: int | None, username: str | None, tenant_name: str | None) -> None:
    """End sessions at once, on every gateway replica (their next request goes to sign-in)."""
    chosen = [value for value in (session_id, username, tenant_name) if value is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --session, --user, --tenant")
    actor = cli_actor()
    if session_id is not None:
        run(lambda db: revoke_session(db, session_id, actor=actor))
        click.echo(f"session {session_id} revoked")
        return
    kind, subject = ("admin", username) if username is not None else ("portal", tenant_name)
    assert subject is not None
    ended = run(lambda db: revoke_subject(db, kind, subject, actor=actor))
    click.echo(f"{ended} session(s) of {kind} {subject} revoked")


@admin.command("portal-link")
@click.argument("tenant_name")
@click.option(
    "--base-url",
    default=None,
    help="The console's public address [default: GATEWAY_CONSOLE_PUBLIC_URL, else "
    "http://GATEWAY_HOST:GATEWAY_PORT].",
)
@click.option(
    "--expires-in",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds the link stays valid, at most GATEWAY_CONSOLE_PORTAL_LINK_SECONDS "
    "[default: that, 3600].",
)
def portal_link(tenant_name: str, base_url: str | None, expires_in: int | None) -> None:
    """A single-use link that opens TENANT's customer portal (printed once, on stdout). Its
    token follows the "#", so it never reaches a server's or a proxy's access log."""
    settings = GatewaySettings()
    base = base_url or settings.console_public_url or f"http://{settings.host}:{settings.port}"
    try:
        ttl = portal_link_lifetime(expires_in, settings.console_portal_link_seconds)
    except InvalidRequest as error:
        raise click.BadParameter(error.message, param_hint="--expires-in") from None
    link = run(
        lambda db: create_portal_link(db, tenant_name, base_url=base, ttl=ttl, actor=cli_actor())
    )
    click.echo(
        f"portal link for {link.tenant}, valid once until "
        f"{link.expires_at.isoformat(timespec='seconds')}:",
        err=True,
    )
    click.echo(link.url)
