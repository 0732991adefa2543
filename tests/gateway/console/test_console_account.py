"""A signed-in user lists their own sessions and ends any one, or every other."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

from billing.db import Database
from tests.gateway.console.client import (
    HTML,
    JSON,
    add_user,
    console_client,
    console_settings,
    sign_in,
    signed_in_token,
)

SESSIONS = "/console/account/sessions"
SESSION_ROW = re.compile(r'<tr( aria-current="true")? data-session="(\d+)">')


def listed(page: httpx.Response) -> dict[str, bool]:
    """Session ids on the sessions page, each with whether it is the current one."""
    return {session_id: bool(current) for current, session_id in SESSION_ROW.findall(page.text)}


def browser(client: TestClient, username: str, user_agent: str) -> str:
    """Sign in as from another browser; returns its session cookie."""
    client.cookies.clear()
    sign_in(client, username)
    cookie = client.cookies["asrgw_console_session"]
    client.get(SESSIONS, headers={**HTML, "User-Agent": user_agent})  # its first request
    return cookie


def use_cookie(client: TestClient, cookie: str) -> None:
    client.cookies.clear()
    client.cookies.set("asrgw_console_session", cookie)


def as_browser(client: TestClient, cookie: str, path: str) -> httpx.Response:
    use_cookie(client, cookie)
    return client.get(path, headers=JSON)


class TestSessionsPage:
    def test_lists_only_the_users_own_sessions_with_the_current_marked(
        self, database: Database
    ) -> None:
        add_user(database, "olivia", "owner")
        add_user(database, "otto", "operator")
        with console_client(database, console_settings()) as client:
            browser(client, "otto", "OttoBrowser/1")
            browser(client, "olivia", "Firefox/128")
            browser(client, "olivia", "Chrome/131")
            page = client.get(SESSIONS, headers=HTML)
        assert page.status_code == 200
        assert sorted(listed(page).values()) == [False, True]
        assert "Firefox/128" in page.text
        assert "Chrome/131" in page.text
        assert "OttoBrowser" not in page.text
        assert page.text.count("This session") == 1
        current = re.search(r'aria-current="true" data-session="\d+">(.*?)</tr>', page.text, re.S)
        assert current is not None
        assert "Chrome/131" in current.group(1)
        assert "testclient" in current.group(1)  # the address it signed in from
        assert "End every other session" in page.text


class TestEndingSessions:
    def test_an_ended_sessions_cookie_opens_nothing(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        with console_client(database, console_settings()) as client:
            laptop = browser(client, "olivia", "Firefox/128")
            phone = browser(client, "olivia", "Chrome/131")
            page = client.get(SESSIONS, headers=HTML)
            (laptop_id,) = [key for key, current in listed(page).items() if not current]
            ended = client.post(
                f"{SESSIONS}/{laptop_id}/end",
                data={"csrf_token": signed_in_token(client, SESSIONS)},
                headers=HTML,
                follow_redirects=False,
            )
            laptop_after = as_browser(client, laptop, "/console/tenants")
            phone_after = as_browser(client, phone, "/console/tenants")
        assert ended.status_code == 303
        assert ended.headers["location"] == f"{SESSIONS}?notice=session-ended"
        assert laptop_after.status_code == 401
        assert laptop_after.json()["error"]["code"] == "console_sign_in_required"
        assert phone_after.status_code == 200

    def test_every_other_session_ends_and_this_one_stays(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        add_user(database, "otto", "operator")
        with console_client(database, console_settings()) as client:
            otto = browser(client, "otto", "OttoBrowser/1")
            others = [browser(client, "olivia", f"Browser/{n}") for n in range(2)]
            current = browser(client, "olivia", "Current/1")
            ended = client.post(
                f"{SESSIONS}/end-others",
                data={"csrf_token": signed_in_token(client, SESSIONS)},
                headers=HTML,
                follow_redirects=False,
            )
            statuses = [
                as_browser(client, cookie, "/console/tenants").status_code for cookie in others
            ]
            otto_after = as_browser(client, otto, "/console/tenants")
            current_after = as_browser(client, current, SESSIONS)
        assert ended.headers["location"] == f"{SESSIONS}?notice=sessions-ended"
        assert statuses == [401, 401]
        assert otto_after.status_code == 200  # another user's sessions are not touched
        assert current_after.status_code == 200

    def test_another_users_session_cannot_be_ended(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        add_user(database, "otto", "operator")
        with console_client(database, console_settings()) as client:
            otto = browser(client, "otto", "OttoBrowser/1")
            use_cookie(client, otto)
            (otto_id,) = listed(client.get(SESSIONS, headers=HTML))
            browser(client, "olivia", "Firefox/128")
            refused = client.post(
                f"{SESSIONS}/{otto_id}/end",
                data={"csrf_token": signed_in_token(client, SESSIONS)},
                headers=JSON,
            )
            otto_after = as_browser(client, otto, "/console/tenants")
        assert refused.status_code == 404
        assert otto_after.status_code == 200

    def test_ending_needs_the_csrf_token(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        with console_client(database, console_settings()) as client:
            browser(client, "olivia", "Firefox/128")
            response = client.post(f"{SESSIONS}/end-others", data={}, headers=JSON)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "csrf_token_invalid"
