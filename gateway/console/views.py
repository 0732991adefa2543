"""Rendering console pages: one Jinja2 environment, autoescaped, with the money filters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from billing.money import MICROS_PER_UNIT, format_micros
from gateway.admin.scopes import Data, Scope, may_read, may_write
from gateway.console.charts import bar_chart

TEMPLATES = Path(__file__).parent / "templates"

# What a redirect's ?notice= may say: fixed sentences, so no text is reflected from a URL.
NOTICES = {
    "signed-out": "You are signed out.",
    "plan-created": "The plan was created.",
    "tenant-created": "The tenant was created.",
    "credit-added": "The credit was applied.",
    "credit-repeated": "This top-up had been applied already; nothing changed.",
    "key-revoked": "The key was revoked.",
    "invoice-drafted": "The draft was rebuilt from the ledger.",
    "invoice-finalized": "The invoice is finalized and will not change again.",
    "node-drained": "The node takes no new requests.",
    "node-undrained": "The node takes requests again.",
    "session-ended": "The session was ended.",
    "sessions-ended": "Every other session was ended.",
}


@dataclass(frozen=True)
class Permissions:
    """What the viewer may see and do, for the templates (``may.write("keys")``): the admin
    API's table of scopes, so a page offers exactly what its routes would allow."""

    scopes: frozenset[Scope]

    def read(self, data: str) -> bool:
        return may_read(self.scopes, Data(data))

    def write(self, data: str) -> bool:
        return may_write(self.scopes, Data(data))


def money(amount_micros: int, currency: str) -> str:
    """Exact: every digit of the integer micro-units (1.234567 USD)."""
    return format_micros(amount_micros, currency)


def units(amount_micros: int) -> str:
    return f"{Decimal(amount_micros) / MICROS_PER_UNIT:.6f}"


def audio_hours(audio_ms: int) -> str:
    return f"{Decimal(audio_ms) / 3_600_000:.3f}"


def audio_seconds(audio_ms: int) -> str:
    return f"{Decimal(audio_ms) / 1000:.3f}"


def moment(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


def number(value: int) -> str:
    return f"{value:,}"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True) if value is not None else "—"


environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(
    money=money,
    units=units,
    hours=audio_hours,
    seconds=audio_seconds,
    moment=moment,
    number=number,
    pretty_json=pretty_json,
)
environment.globals["bar_chart"] = bar_chart


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    caller = getattr(request.state, "console_caller", None)
    notice = NOTICES.get(request.query_params.get("notice", ""))
    page = environment.get_template(template).render(
        request=request,
        viewer=caller,
        csrf_token=caller.csrf_token if caller is not None else None,
        may=Permissions(caller.scopes if caller is not None else frozenset()),
        notice=notice,
        **(context or {}),
    )
    # Pages show balances and secrets: never cached, never framed.
    return HTMLResponse(
        page,
        status_code=status_code,
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
            "Content-Security-Policy": (
                "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
                "style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
                "form-action 'self'; base-uri 'none'"
            ),
            **(headers or {}),
        },
    )
