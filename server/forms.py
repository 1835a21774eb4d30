"""The form an OAuth endpoint reads (`application/x-www-form-urlencoded`, bounded; a GET's query)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from hearth.security.authority import AuthError

_FORM_LIMIT = 64 * 1024


async def read_form(request: Request) -> dict[str, str]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method == "POST" and media != "application/x-www-form-urlencoded":
        raise AuthError("invalid_request", "Send the parameters as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_LIMIT:
            raise AuthError("invalid_request", f"The form is larger than {_FORM_LIMIT} bytes")
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    form: dict[str, str] = dict(request.query_params) if request.method == "GET" else {}
    for name, value in pairs:
        if name in form and request.method == "POST":
            raise AuthError("invalid_request", f"Parameter {name!r} given twice")
        form[name] = value
    return form
