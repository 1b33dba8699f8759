"""Pre-auth key rules: unknown, expired and already-used keys are refused with one clear message.

The message becomes ``RegisterResponse.Error``, which a Go client shows verbatim ("register
request: invalid authkey"). Single-use keys are consumed atomically, so two nodes racing with the
same key cannot both join.
"""

from __future__ import annotations

import time

from pytsnet.localnet.store import AuthKey, Store

ERR_INVALID = "invalid authkey"
ERR_EXPIRED = "authkey expired"
ERR_USED = "authkey already used"


class AuthKeyRejected(Exception):
    """The auth key cannot register a node; ``str(exc)`` is the RegisterResponse error."""


def check_authkey(store: Store, key: str, *, now: float | None = None) -> AuthKey:
    """Return the key's record if it may register one more node right now, without consuming it."""
    if not key:
        raise AuthKeyRejected(ERR_INVALID)
    # A "--TL…" suffix carries a tailnet-lock signature (features.md); the key itself is the prefix.
    rec = store.get_authkey(key.split("--TL", 1)[0])
    if rec is None:
        raise AuthKeyRejected(ERR_INVALID)
    if rec.expires is not None and rec.expires <= (time.time() if now is None else now):
        raise AuthKeyRejected(ERR_EXPIRED)
    if not rec.reusable and rec.used:
        raise AuthKeyRejected(ERR_USED)
    return rec


def consume_authkey(store: Store, key: str, *, now: float | None = None) -> AuthKey:
    """Check and use the key in one step (single-use keys flip to used)."""
    rec = check_authkey(store, key, now=now)
    if not store.mark_authkey_used(rec.id):
        raise AuthKeyRejected(ERR_USED)
    return rec
