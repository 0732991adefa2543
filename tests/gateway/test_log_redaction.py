"""Secrets in URLs are redacted from uvicorn's log lines (``gateway/log_redaction.py``)."""

from __future__ import annotations

import logging

import pytest

from gateway.log_redaction import RedactUrlSecrets


def access_line(path: str) -> logging.LogRecord:
    """A record as uvicorn's access logger makes it."""
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5555", "GET", path, "1.1", 200), None,
    )  # fmt: skip


class TestRedaction:
    @pytest.mark.parametrize(
        ("path", "logged"),
        [
            ("/funasr?token=sk-asrgw-secret&x=1", "/funasr?token=[redacted]&x=1"),
            ("/funasr?mode=2pass&token=sk-asrgw-secret", "/funasr?mode=2pass&token=[redacted]"),
            ("/console/portal/open/a-secret-link", "/console/portal/open/[redacted]"),
            ("/console/portal/open/a-secret-link?next=x", "/console/portal/open/[redacted]?next=x"),
            ("/v1/models?limit=2", "/v1/models?limit=2"),
        ],
    )
    def test_an_access_line_keeps_no_secret(self, path: str, logged: str) -> None:
        record = access_line(path)
        assert RedactUrlSecrets().filter(record)
        assert record.getMessage() == f'127.0.0.1:5555 - "GET {logged} HTTP/1.1" 200'

    def test_a_websocket_line_of_the_error_logger_keeps_no_secret(self) -> None:
        record = logging.LogRecord(
            "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
            ("127.0.0.1:5555", "/funasr?token=sk-asrgw-secret&x=1"), None,
        )  # fmt: skip
        assert RedactUrlSecrets().filter(record)
        assert "sk-asrgw-secret" not in record.getMessage()
        assert "/funasr?token=[redacted]&x=1" in record.getMessage()
