"""The console in a real browser: Debian's chromium driven by Playwright, against a real gateway
process and a real inference node, with axe-core on every page and a screenshot of each.

Screenshots go to ``ASRGW_CONSOLE_SCREENSHOTS`` when set (``make console-screenshots`` sets it
to refresh docs/console/), else under pytest's temporary directory; the path is printed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing.db import Database
from billing.migrate import upgrade_to_head
from billing.money import format_micros
from billing.periods import billing_period
from gateway.console.users.service import create_user
from tests.conftest import NODE_SECRET
from tests.fixtures.audio import quiet_audio_environment
from tests.fixtures.environment import require_tool, skip_or_fail
from tests.fixtures.factories import TEST_ACTOR, create_tenant_with_key, usage_rows
from tests.fixtures.processes import asrgw, free_port, running

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
PASSWORD = "a long console password"
# Debian's chromium on a machine without outside network: no background services.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


@dataclass
class Console:
    url: str
    database: Database
    env: dict[str, str]
    shots: Path

    def ledger(self) -> list[Any]:
        return usage_rows(self.database)


@pytest.fixture
def console(
    tmp_path: Path,
    node_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Console]:
    database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_to_head(database_url)
    database = Database(database_url)
    with database.transaction() as session:
        create_user(session, "olivia", "owner", PASSWORD, actor=TEST_ACTOR)
    # Another customer whose data the portal must never show.
    create_tenant_with_key(database, "globex")
    shots = Path(os.environ.get("ASRGW_CONSOLE_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    shots.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        # Where a reviewer finds the screenshots, whatever pytest captures.
        print(f"\nconsole screenshots: {shots}")  # noqa: T201
    port = free_port()
    env = {
        "BILLING_DATABASE_URL": database_url,
        "GATEWAY_NODES": node_url,
        "GATEWAY_NODE_SECRET": NODE_SECRET,
        "GATEWAY_CONSOLE_SECURE_COOKIES": "false",
        "GATEWAY_CONSOLE_SIGN_IN_LIMIT": "3/minute",
        "GATEWAY_JOB_WORKERS": "0",
    }
    url = f"http://127.0.0.1:{port}"
    try:
        with running(
            ["gateway", "--port", str(port)], env, f"{url}/health/ready", tmp_path / "gateway.log"
        ):
            yield Console(url=url, database=database, env=env, shots=shots)
    finally:
        database.dispose()


@pytest.fixture
def browser(weather_wav: Path, tmp_path: Path) -> Iterator[Any]:
    require_tool("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (the dev extra has it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={weather_wav}"],
            env=quiet_audio_environment(tmp_path),
        )
        try:
            yield launched
        finally:
            launched.close()


def check_page(page: Any, console: Console, name: str) -> None:
    """No serious or critical axe-core violation, and a full-page screenshot."""
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.map(n => n.target.join(" "))}));
        }"""
    )
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert serious == [], (name, serious)
    page.screenshot(path=str(console.shots / f"{name}.png"), full_page=True)


def new_page(browser: Any) -> Any:
    # bypass_csp: axe-core is injected as an inline script, which the console's CSP refuses.
    context = browser.new_context(bypass_csp=True, permissions=["microphone"])
    return context.new_page()


def sign_in(page: Any, console: Console, password: str = PASSWORD) -> Any:
    page.goto(f"{console.url}/console")
    page.get_by_label("Username").fill("olivia")
    page.get_by_label("Password").fill(password)
    with page.expect_response(lambda r: r.url.endswith("/console/sign-in")) as answer:
        page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    return answer.value


def totals_by_day_and_model(rows: list[Any]) -> dict[tuple[str, str], list[int]]:
    totals: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        key = (row.created_at.date().isoformat(), row.model)
        found = totals.setdefault(key, [0, 0, 0])
        found[0] += 1
        found[1] += row.billed_tokens
        found[2] += row.cost_micros
    return totals


class TestConsoleInABrowser:
    def test_admin_and_customer_journey(
        self, console: Console, browser: Any, weather_wav: Path
    ) -> None:
        require_tool("pdftotext")
        admin = new_page(browser)

        # The admin signs in.
        admin.goto(f"{console.url}/console/tenants")
        assert "/console/sign-in" in admin.url
        check_page(admin, console, "01-sign-in")
        sign_in(admin, console)
        assert admin.get_by_role("heading", name="Overview").is_visible()
        check_page(admin, console, "02-overview")

        # … creates a plan, a tenant, a key; adds credit; creates a portal link.
        admin.goto(f"{console.url}/console/plans")
        admin.get_by_label("Name", exact=True).fill("pro")
        admin.get_by_label("Price per 1,000 tokens").fill("25000")
        admin.get_by_role("button", name="Create plan").click()
        assert admin.get_by_role("status").inner_text() == "The plan was created."
        check_page(admin, console, "03-plans")
        admin.goto(f"{console.url}/console/tenants")
        admin.get_by_label("Name", exact=True).fill("acme")
        admin.get_by_label("Plan").select_option("pro")
        admin.get_by_label("Prepaid").check()
        admin.get_by_role("button", name="Create tenant").click()
        assert admin.get_by_role("heading", name="Tenant acme").is_visible()
        admin.get_by_label("Amount (USD)").fill("5")
        admin.get_by_role("button", name="Add credit").click()
        assert admin.locator('[data-field="credit"]').inner_text() == "5.000000 USD"
        admin.get_by_role("button", name="Create key").click()
        admin_key = admin.locator("[data-secret]").input_value()
        assert admin_key.startswith("sk-asrgw-")
        check_page(admin, console, "04-key-created")
        admin.goto(f"{console.url}/console/tenants/acme")
        check_page(admin, console, "05-tenant")
        admin.goto(f"{console.url}/console/tenants")
        check_page(admin, console, "06-tenants")
        admin.goto(f"{console.url}/console/tenants/acme")
        admin.get_by_role("button", name="Create a portal link").click()
        link = admin.locator("[data-portal-url]").input_value()
        check_page(admin, console, "07-portal-link")

        # A request without its CSRF token is refused.
        forged = admin.request.post(f"{console.url}/console/tenants", form={"name": "evil"})
        assert forged.status == 403
        assert forged.json()["error"]["code"] == "csrf_token_invalid"

        # The customer opens the link.
        customer = new_page(browser)
        customer.goto(link)
        check_page(customer, console, "08-portal-open")
        # The page moved the token from the fragment into its form and out of the address bar.
        assert "#" in link
        assert customer.url == f"{console.url}/console/portal/open"
        assert customer.get_by_label("Portal link code").is_hidden()
        customer.get_by_role("button", name="Open the portal").click()
        assert customer.get_by_role("heading", name="acme").is_visible()
        assert customer.locator('[data-field="available"]').inner_text() == "5.000000 USD"
        check_page(customer, console, "09-portal-balance")

        # … creates a key,
        customer.goto(f"{console.url}/console/portal/keys")
        customer.get_by_label("Label").fill("playground")
        customer.get_by_label("audio:transcribe").check()
        customer.get_by_role("button", name="Create key").click()
        customer_key = customer.locator("[data-secret]").input_value()
        prefix = customer_key.removeprefix("sk-asrgw-")[:12]
        customer.goto(f"{console.url}/console/portal/keys")
        check_page(customer, console, "10-portal-keys")

        # … transcribes an uploaded file in the playground (srt), billed to that key,
        customer.goto(f"{console.url}/console/portal/playground")
        customer.get_by_label("Bill to key").select_option(prefix)
        customer.get_by_label("Response format").select_option("srt")
        customer.get_by_label("Audio file").set_input_files(str(weather_wav))
        customer.get_by_role("button", name="Transcribe", exact=True).click()
        customer.wait_for_selector("#pg-charge:not([hidden])")
        body = customer.locator("#pg-body").input_value()
        assert body.startswith("1\n00:00:00,")
        assert " --> " in body
        assert "weather" in body
        shown_cost = int(customer.locator("#pg-cost-micros").inner_text())
        request_id = customer.locator("#pg-request-id").inner_text()
        check_page(customer, console, "11-playground")
        (row,) = [row for row in console.ledger() if row.request_id == request_id]
        assert row.cost_micros == shown_cost
        assert row.cost_micros == (row.billed_tokens * 25_000 + 500) // 1000
        assert customer.locator("#pg-cost").inner_text() == format_micros(row.cost_micros, "USD")

        # … and a recording from the browser's microphone (webm from MediaRecorder).
        customer.get_by_role("button", name="Record", exact=True).click()
        customer.wait_for_timeout(2500)  # records the fake microphone's speech for a while
        customer.get_by_role("button", name="Stop recording").click()
        customer.wait_for_selector("#pg-recorded:has-text('Recorded')")
        customer.get_by_label("Response format").select_option("json")
        customer.get_by_role("button", name="Transcribe", exact=True).click()
        customer.wait_for_function(
            f"document.getElementById('pg-request-id').textContent !== '{request_id}'"
        )
        recorded_id = customer.locator("#pg-request-id").inner_text()
        (recorded,) = [row for row in console.ledger() if row.request_id == recorded_id]
        assert recorded.cost_micros == int(customer.locator("#pg-cost-micros").inner_text())
        assert recorded.audio_ms > 1000

        # The usage page equals the ledger, row by row.
        customer.goto(f"{console.url}/console/portal/usage")
        acme_rows = [row for row in console.ledger() if row.api_key_id != 1]
        expected = totals_by_day_and_model(acme_rows)
        for (day, model), (requests, tokens, cost) in expected.items():
            line = customer.locator(f'tr[data-day="{day}"][data-model="{model}"]')
            assert line.locator('[data-field="requests"]').inner_text() == str(requests)
            assert line.locator('[data-field="billed_tokens"]').inner_text() == str(tokens)
            assert line.locator('[data-field="cost_micros"]').inner_text() == str(cost)
        assert customer.locator('[data-field="total-cost-micros"]').inner_text() == str(
            sum(row.cost_micros for row in acme_rows)
        )
        check_page(customer, console, "12-portal-usage")

        # The admin drafts and finalizes the month's invoice; nodes and the audit log.
        period = billing_period(datetime.now(UTC))
        admin.goto(f"{console.url}/console/invoices")
        admin.get_by_label("Tenant", exact=True).last.fill("acme")
        admin.get_by_role("button", name="Build draft").click()
        admin.once("dialog", lambda dialog: dialog.accept())
        admin.get_by_role("button", name="Finalize").click()
        assert "finalized" in admin.get_by_role("status").inner_text()
        check_page(admin, console, "13-invoice")
        admin.goto(f"{console.url}/console/invoices")
        check_page(admin, console, "14-invoices")
        admin.goto(f"{console.url}/console/nodes")
        assert "ready" in admin.locator("tbody").inner_text()
        check_page(admin, console, "15-nodes")
        admin.goto(f"{console.url}/console")
        today = admin.get_by_role("region", name="Today")
        assert today.get_by_role("definition").first.inner_text() == str(len(console.ledger()))
        revenue = sum(row.cost_micros for row in console.ledger())
        assert format_micros(revenue, "USD") in today.inner_text()
        check_page(admin, console, "19-overview")
        admin.goto(f"{console.url}/console/audit?actor=olivia")
        assert "invoice.finalize" in admin.locator("tbody").inner_text()
        check_page(admin, console, "16-audit")

        # The customer downloads the invoice PDF; its total is the ledger's.
        customer.goto(f"{console.url}/console/portal/invoices")
        check_page(customer, console, "17-portal-invoices")
        with customer.expect_download() as download:
            customer.get_by_role("link", name=f"Download PDF of {period}").click()
        pdf = console.shots / "invoice.pdf"
        download.value.save_as(pdf)
        text = subprocess.run(
            ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
        ).stdout
        total = sum(row.cost_micros for row in acme_rows)
        assert f"Total in micro-units: {total}." in text
        pdf.unlink()

        # Another tenant's ids are 404 to this portal.
        other = customer.goto(f"{console.url}/console/portal/invoices/2020-01")
        assert other is not None
        assert other.status == 404

        # Revoked sessions are sent back to sign-in, the customer's and the admin's.
        revoked = asrgw("admin", "session", "revoke", "--tenant", "acme", env=console.env)
        assert revoked.returncode == 0, revoked.stderr
        customer.goto(f"{console.url}/console/portal/keys")
        assert "/console/sign-in" in customer.url
        assert "Your portal session has ended" in customer.content()
        revoked = asrgw("admin", "session", "revoke", "--user", "olivia", env=console.env)
        assert revoked.returncode == 0, revoked.stderr
        admin.goto(f"{console.url}/console/tenants")
        assert "/console/sign-in" in admin.url

        # Wrong passwords are throttled (three per minute here), with Retry-After.
        stranger = new_page(browser)
        statuses = [sign_in(stranger, console, "wrong password").status for _ in range(3)]
        throttled = sign_in(stranger, console)
        assert statuses == [401, 401, 401]
        assert throttled.status == 429
        assert int(throttled.headers["retry-after"]) >= 1
        assert "Too many failed sign-in attempts" in stranger.content()
        check_page(stranger, console, "18-sign-in-throttled")
