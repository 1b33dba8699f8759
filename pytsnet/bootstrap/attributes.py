"""The options Go reads from a URL-style suffix of the credential itself (sans-IO).

``tskey-client-xxxx?ephemeral=false&preauthorized=true&baseURL=https://…`` (``feature/oauthkey``) and
``CLIENT_ID?ephemeral=…&preauthorized=…`` (``feature/identityfederation``). An unknown attribute or a
bad boolean is a ``ConfigError`` (Go: ``unknown attribute "x"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from pytsnet.errors import ConfigError

__all__ = ["CLIENT_SECRET_PREFIX", "KeyOptions", "is_client_secret", "parse_client_id", "parse_client_secret"]

CLIENT_SECRET_PREFIX = "tskey-client-"


@dataclass(frozen=True)
class KeyOptions:
    """What the minted key asks for, and where (``base_url`` empty: the caller's default)."""

    credential: str
    ephemeral: bool
    preauthorized: bool
    base_url: str = ""

    def __repr__(self) -> str:  # the credential may be a secret: never in a repr
        return (f"KeyOptions(ephemeral={self.ephemeral}, preauthorized={self.preauthorized}, "
                f"base_url={self.base_url!r})")


def is_client_secret(value: str) -> bool:
    """Go's test: an OAuth client secret starts with ``tskey-client-``; anything else is an auth key."""
    return value.startswith(CLIENT_SECRET_PREFIX)


def _bool(attrs: dict[str, list[str]], name: str, default: bool, what: str) -> bool:
    values = attrs.get(name)
    if not values or values[-1] == "":
        return default
    text = values[-1].strip().lower()
    if text in ("1", "t", "true"):  # strconv.ParseBool's spellings
        return True
    if text in ("0", "f", "false"):
        return False
    raise ConfigError(f"{what}: attribute {name}={values[-1]!r} is not a boolean (true or false)")


def _split(value: str, allowed: tuple[str, ...], what: str) -> tuple[str, dict[str, list[str]]]:
    head, _, named = value.partition("?")
    attrs = parse_qs(named, keep_blank_values=True)
    for k in attrs:
        if k not in allowed:
            raise ConfigError(f"{what}: unknown attribute {k!r} (known: {', '.join(allowed)})")
    return head, attrs


def parse_client_secret(value: str) -> KeyOptions:
    """Go's ``oauthkey.parseOptionalAttributes``: ephemeral defaults to true, preauthorized to false."""
    what = "OAuth client secret"
    secret, attrs = _split(value, ("ephemeral", "preauthorized", "baseURL"), what)
    base = (attrs.get("baseURL") or [""])[-1]
    return KeyOptions(secret, _bool(attrs, "ephemeral", True, what),
                      _bool(attrs, "preauthorized", False, what), base.rstrip("/"))


def parse_client_id(value: str) -> KeyOptions:
    """Go's ``identityfederation.parseOptionalAttributes``: no suffix means ephemeral, not
    preauthorized; a suffix sets only what it names (the rest false, as Go)."""
    what = "workload identity client ID"
    if "?" not in value:
        return KeyOptions(value, True, False)
    client_id, attrs = _split(value, ("ephemeral", "preauthorized"), what)
    return KeyOptions(client_id, _bool(attrs, "ephemeral", False, what),
                      _bool(attrs, "preauthorized", False, what))
