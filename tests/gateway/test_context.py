"""What every response carries, even when the code behind it crashes."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.app import install_error_handlers
from gateway.context import RequestContextMiddleware


def crashing_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_middleware(RequestContextMiddleware)
    return app


def test_an_unhandled_error_is_a_500_envelope_with_its_request_id() -> None:
    with TestClient(crashing_app(), raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert request_id.startswith("req_")
    error = response.json()["error"]
    assert error["code"] == "internal_error"
    assert error["type"] == "server_error"
    assert request_id in error["message"]
    assert "a bug" not in error["message"]  # internals stay in the log
