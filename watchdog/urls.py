"""Checking the URLs an operator configures, and showing them without their secret parts."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "DATABASE_URL_PROBLEM",
    "HEARTBEAT_URL_PROBLEM",
    "check_database_url",
    "check_http_url",
    "database_location",
    "database_passwords",
    "url_host",
]

HEARTBEAT_URL_PROBLEM = "must be an http(s) URL such as https://hc-ping.com/<uuid>"
"""What is wrong with an unusable `heartbeat_url`; never the value, which is a secret."""
DATABASE_URL_PROBLEM = (
    "must be a postgresql:// URL such as postgresql://watchdog@db.example/watchdog"
)
"""What is wrong with an unusable `WATCHDOG_DATABASE_URL`; never the value (its password)."""
_DATABASE_SCHEMES = ("postgresql://", "postgres://")


def check_http_url(value: str) -> None:
    """An http(s) URL with a host, or ValueError; checked at load so `check` catches it."""
    if not value.startswith(("https://", "http://")):
        raise ValueError("must start with https:// (or http:// for a local test server)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsing the port raises on garbage such as "[::1"
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if not parts.hostname or not value.isascii() or any(c.isspace() for c in value):
        raise ValueError("not a valid URL: needs a host name, no spaces")


def url_host(value: str) -> str:
    """The host (and port) of a URL whose path or query is a secret, safe to print."""
    parts = urlsplit(value)
    return parts.netloc.rpartition("@")[2] or "?"


def check_database_url(value: str) -> None:
    """A PostgreSQL URL (`postgresql://` or `postgres://`), or ValueError saying so."""
    if not value.startswith(_DATABASE_SCHEMES) or any(c.isspace() for c in value):
        raise ValueError(DATABASE_URL_PROBLEM)


def database_location(value: str) -> str:
    """`postgresql://host:port/database` of a database URL: no user, password or query
    (which may carry `password=`), safe to print."""
    scheme, _, rest = value.partition("://")
    netloc, _, path = rest.partition("/")
    database = path.partition("?")[0].partition("#")[0]
    return f"{scheme}://{netloc.rpartition('@')[2]}/{database}"


def database_passwords(value: str) -> list[str]:
    """The password of a database URL, as written and decoded (user info or `password=`),
    for the log redaction: a driver's message could quote it without the rest of the URL."""
    userinfo = value.partition("://")[2].partition("/")[0].rpartition("@")[0]
    written = [userinfo.partition(":")[2], *parse_qs(value.partition("?")[2]).get("password", [])]
    return [p for p in dict.fromkeys([*written, *map(unquote, written)]) if p]
