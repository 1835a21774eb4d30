"""The pages of an app launch (security/launch.py): sign in, then a consent page with a patient picker when one
is needed, then the redirect back to the app with a code (or an error). Minimal server-rendered HTML, no script."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hearth.security.authority import AuthError
from hearth.security.launch import Launches
from hearth.security.scopes import split
from hearth.server.forms import read_form


async def authorize(launches: Launches, request: Request) -> Response:
    """`GET|POST /auth/authorize`."""
    try:
        form = await read_form(request)
    except AuthError as error:
        return _page("Error", f"<p>{html.escape(error.description)}</p>", 400)
    if "session" in form:
        asked, params = await launches.decided(form["session"], form.get("decision") == "approve",
                                               form.get("patient"))
        if asked is None:
            return _page("Error", "<p>This page has expired; start again from the app.</p>", 400)
        return _redirect(asked, params)
    try:
        asked, client = await launches.checked(form)
    except AuthError as error:  # no trustworthy redirect URI: tell the user, not the app
        return _page("Error", f"<p>{html.escape(error.description)}</p>", 400)
    if "username" not in form:
        return _login_page(asked)
    user = await launches.authority.check_password(form.get("username", ""), form.get("password", ""))
    if user is None:
        return _login_page(asked, "Wrong user name or password.")
    try:
        session, pick = await launches.signed_in(asked, user)
    except AuthError as error:
        return _redirect(asked, {"error": error.error, "error_description": error.description})
    return _consent_page(session, client, asked, user, pick)


def _redirect(asked: dict[str, str], params: dict[str, str]) -> Response:
    if asked.get("state"):
        params = {**params, "state": asked["state"]}
    separator = "&" if "?" in asked["redirect_uri"] else "?"
    return RedirectResponse(f"{asked['redirect_uri']}{separator}{urlencode(params)}", 302,
                            headers={"Cache-Control": "no-store"})


def _hidden(asked: dict[str, str]) -> str:
    return "".join(f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
                   for name, value in asked.items())


def _login_page(asked: dict[str, str], problem: str = "") -> Response:
    warning = f'<p class="problem">{html.escape(problem)}</p>' if problem else ""
    body = (f'{warning}<form method="post" action="authorize">{_hidden(asked)}'
            '<label>User name <input name="username" autocomplete="username" required></label>'
            '<label>Password <input name="password" type="password" autocomplete="current-password" required>'
            '</label><button type="submit">Sign in</button></form>')
    return _page("Sign in to Hearth", body, 401 if problem else 200)


def _consent_page(session: str, client: dict[str, Any], asked: dict[str, str], user: dict[str, Any],
                  pick: bool) -> Response:
    scopes = "".join(f"<li><code>{html.escape(scope)}</code></li>" for scope in split(asked["scope"]))
    picker = ('<label>Patient (Patient id) <input name="patient" required></label>' if pick else "")
    body = (f'<p>{html.escape(client["client_id"])} asks, for {html.escape(user["name"])}:</p><ul>{scopes}</ul>'
            f'<form method="post" action="authorize"><input type="hidden" name="session" '
            f'value="{html.escape(session)}">{picker}<button name="decision" value="approve">Allow</button>'
            '<button name="decision" value="deny" formnovalidate>Deny</button></form>')
    return _page("Allow access?", body)


def _page(title: str, body: str, status: int = 200) -> Response:
    document = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                '<meta name="viewport" content="width=device-width"><style>body{font-family:sans-serif;'
                'max-width:28em;margin:3em auto}label{display:block;margin:.6em 0}.problem{color:#a00}</style>'
                f'</head><body><h1>{html.escape(title)}</h1>{body}</body></html>')
    return HTMLResponse(document, status, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                                  "Content-Security-Policy": "default-src 'none'; "
                                                  "style-src 'unsafe-inline'; form-action 'self'"})
