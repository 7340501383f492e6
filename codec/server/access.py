"""Who may use a `codec serve`: browser origins, a shared-secret token, and where it may listen without one.

A web page the user visits can open a WebSocket to 127.0.0.1 (browsers apply no CORS to WebSockets, but they
always send the page's `Origin`), so the server refuses every request that carries an `Origin` it was not told
to allow; programs (the Python client, `codec stream-client`, curl) send no `Origin` and are not affected. With a
token, every request must also carry `Authorization: Bearer TOKEN`, compared in constant time. Both checks run on
the HTTP upgrade request, before the connection becomes a WebSocket, so a refused client never reaches the
model: a foreign origin gets HTTP 403, a missing or wrong token HTTP 401, each with a one-line reason.

Browsers cannot set an `Authorization` header on a WebSocket: a page allowed with `--allow-origin` reaches a
server with a token through a reverse proxy that adds the header (docs/STREAMING.md shows one for TLS).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from codec.errors import CodecError

TOKEN_ENV = "CODEC_SERVE_TOKEN"  # the token, when neither --token nor --token-file gives one
MAX_TOKEN_CHARS = 4096
NEW_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


@dataclass(frozen=True)
class Access:
    """Who a server answers: `origins` lists the browser origins allowed (scheme://host[:port], lower case);
    requests without an `Origin` header always pass that check. `token`: required of every request if set."""

    token: str | None = None
    origins: tuple[str, ...] = ()

    def refusal(self, headers) -> tuple[HTTPStatus, str] | None:
        """(HTTP status, reason) to refuse an upgrade request with these headers, or None to accept it."""
        origins = headers.get_all("Origin")
        if len(origins) > 1:
            return HTTPStatus.FORBIDDEN, "more than one Origin header\n"
        if origins and origins[0].strip().lower() not in self.origins:
            return HTTPStatus.FORBIDDEN, (
                f"origin {origins[0]!r} is not allowed (a web page); the server's operator can allow it with "
                f"`codec serve --allow-origin {origins[0]}`\n"
            )
        if self.token is None:
            return None
        given = headers.get_all("Authorization")
        if not given:
            return HTTPStatus.UNAUTHORIZED, (
                "this server needs a token: send `Authorization: Bearer TOKEN` (codec stream-client --token-file FILE, "
                f"or set {TOKEN_ENV})\n"
            )
        scheme, _, value = given[0].strip().partition(" ")
        ok = len(given) == 1 and scheme.lower() == "bearer"
        if not hmac.compare_digest(value.strip().encode("utf-8", "replace"), self.token.encode()) or not ok:
            return HTTPStatus.UNAUTHORIZED, "wrong token; send the token the server was started with\n"
        return None


def check_token(token: str, where: str) -> str:
    """`token` if it can travel in an HTTP header (printable ASCII, no spaces), else a CodecError naming `where`."""
    if not token:
        raise CodecError(f"{where} is empty; make a token with {NEW_TOKEN}")
    if len(token) > MAX_TOKEN_CHARS or not all(33 <= ord(c) < 127 for c in token):
        raise CodecError(
            f"{where} must be printable ASCII without spaces, at most {MAX_TOKEN_CHARS} characters; make one with "
            f"{NEW_TOKEN}"
        )
    return token


def resolve_token(token: str | None = None, token_file: str | Path | None = None) -> str | None:
    """The token from `token`, else from the first line of `token_file`, else from $CODEC_SERVE_TOKEN, else None."""
    if token is not None:
        return check_token(token, "--token")
    if token_file is not None:
        try:
            lines = Path(token_file).read_text(encoding="ascii").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or "not ASCII text"
            raise CodecError(f"cannot read the token file {token_file} ({reason}); give a file holding it") from None
        return check_token(lines[0].strip() if lines else "", f"the token file {token_file}")
    if os.environ.get(TOKEN_ENV) is not None:
        return check_token(os.environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}")
    return None


def parse_origins(values: list[str] | None) -> tuple[str, ...]:
    """`--allow-origin` values (each repeatable and comma-separated) as lower-case origins; a malformed one is an
    error naming the form."""
    origins = []
    for value in values or []:
        for origin in filter(None, (v.strip() for v in value.split(","))):
            scheme, sep, rest = origin.partition("://")
            if origin != "null" and (not sep or scheme not in ("http", "https") or not rest or "/" in rest):
                raise CodecError(
                    f"--allow-origin {origin!r} is not an origin; give scheme://host[:port] as a browser sends it, "
                    "e.g. https://app.example.com or http://localhost:3000"
                )
            origins.append(origin.lower())
    return tuple(origins)


def is_loopback(host: str) -> bool:
    """True if every address `host` names is a loopback address (127.0.0.0/8, ::1); "" and 0.0.0.0 are not."""
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False  # the server will fail to bind it, with its own message
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_exposure(host: str, token: str | None, insecure_no_token: bool) -> None:
    """Refuse to listen beyond this machine without a token, unless the operator said so explicitly."""
    if token is None and not insecure_no_token and not is_loopback(host):
        raise CodecError(
            f"--host {host or '(all interfaces)'} is reachable from other machines and no token is set; give "
            f"--token-file FILE (or set {TOKEN_ENV}), or --insecure-no-token to serve anyone who can reach the port"
        )
