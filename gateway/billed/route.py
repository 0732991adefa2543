"""``BilledFormRoute``: a billed route whose upload is parsed only once its key is let in.

FastAPI parses a route's multipart form before it resolves any dependency, so a request with
a wrong key, no scope or no rate-limit room would cost the whole upload's parse before its
401, 403 or 429; and FastAPI's per-field form handling costs a cache hit a tenth of its CPU.
This route class serves an endpoint declared the usual way, ``call: BilledCallDep`` plus
``Form``/``File`` parameters, so its signature still makes the OpenAPI document, but runs it in
the order the money sequence wants:

```
Idempotency-Key header checked ──▶ key, scope, rate limits (BilledCall) ──▶ form parsed and
validated in one model ──▶ endpoint(call, **fields)
```

Errors keep FastAPI's shapes: an invalid header or field raises ``RequestValidationError``
with the same locations and messages (a field sent empty counts as not sent, as FastAPI
counts it), and a body that cannot be parsed gets the 400 FastAPI would give (Starlette's
own message for a malformed multipart body, FastAPI's for any other failure).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import HTTPException, Request
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError, create_model
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.billed.call import billed_call, get_billed_call
from gateway.deps import api_key_bearer, api_key_header

PARSE_ERROR = "There was an error parsing the body"


class BilledFormRoute(APIRoute):
    """See the module docstring. The endpoint's parameters are ``call`` (``BilledCallDep``)
    and form fields only."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        billed = [dep for dep in self.dependant.dependencies if dep.call is get_billed_call]
        others = [dep for dep in self.dependant.dependencies if dep.call is not get_billed_call]
        if len(billed) != 1 or others or self.dependant.query_params:
            raise TypeError(f"{self.path}: a BilledFormRoute takes `call` and form fields only")
        headers = billed[0].header_params
        form = FormFields(self.dependant.body_params, self.name)
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            _, errors = request_params_to_args(headers, request.headers)
            if errors:
                raise RequestValidationError(errors)
            bearer = await api_key_bearer(request)
            x_api_key = await api_key_header(request)
            async with billed_call(request, bearer, x_api_key) as call:
                received = await read_form(request)
                try:
                    response: Response = await endpoint(call=call, **form.validate(received))
                finally:
                    await received.close()
                return response

        return handle


class FormFields:
    """An endpoint's form parameters as one pydantic model, validated in one call."""

    def __init__(self, fields: Sequence[Any], name: str) -> None:
        definitions: dict[str, Any] = {
            field.name: (field.field_info.annotation, field.field_info) for field in fields
        }
        self.model: type[BaseModel] = create_model(f"{name}_form", **definitions)
        # (parameter name, name in the form, takes several values)
        self.fields = [
            (field.name, field.alias, _is_list(field.field_info.annotation)) for field in fields
        ]

    def validate(self, form: FormData) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for _, alias, several in self.fields:
            if several:
                items = form.getlist(alias)
                if items:
                    values[alias] = items
                continue
            value = form.get(alias)
            if value is not None and value != "":
                values[alias] = value
        try:
            validated = self.model.model_validate(values)
        except ValidationError as error:
            raise RequestValidationError(
                [
                    {**problem, "loc": ("body", *problem["loc"])}
                    for problem in error.errors(include_url=False)
                ]
            ) from None
        return {name: getattr(validated, name) for name, _, _ in self.fields}


async def read_form(request: Request) -> FormData:
    """The parsed form; Starlette's own 400 for a malformed multipart body, FastAPI's for any
    other failure to parse."""
    try:
        return await request.form()
    except StarletteHTTPException:
        raise
    except Exception as error:
        raise HTTPException(status_code=400, detail=PARSE_ERROR) from error


def _is_list(annotation: Any) -> bool:
    """``list[X]`` or ``list[X] | None``: a field the form may repeat."""
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    return any(getattr(candidate, "__origin__", None) is list for candidate in candidates)
