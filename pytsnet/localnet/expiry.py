"""Node-key expiry for the local tailnet: the duration syntax, the tailnet's key lifetime, and node lookup.

Control, not the client, decides when a node key expires (as Tailscale's control server does): a
node gets ``now + key lifetime`` when it authenticates (auth key, approval, re-auth after expiry); a
client may ask for an earlier expiry, never a later one. The lifetime is a setting of the tailnet
(``localnet --key-expiry``, default 180 days), kept in the database so the admin CLI in another
process (``nodes approve``/``nodes extend``) uses the one the server runs with. One duration parser
serves ``--key-expiry``, ``authkey create --expiry`` and ``nodes extend --for``.
"""

from __future__ import annotations

import math
import re

from pytsnet.localnet.store import Node, Store

DEFAULT_KEY_EXPIRY = 180 * 86400.0
"""Tailscale's default node-key lifetime: 180 days."""
META_KEY_EXPIRY = "key_expiry_seconds"

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


class DurationError(ValueError):
    """Text that is not a duration (``90s``, ``12h``, ``180d``, ``1h30m``; a bare number is seconds)."""


def parse_duration(text: str | float) -> float:
    """Seconds in ``text``: one or more ``NUMBER[s|m|h|d|w]`` terms (``90s``, ``12h``, ``1h30m``,
    ``180d``); a bare number is seconds. Must be positive and finite."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        s = text.strip().lower()
        pos, seconds = 0, 0.0
        while pos < len(s):
            m = _DURATION.match(s, pos)
            if m is None or (not m.group(2) and (pos or m.end() != len(s))):  # bare: the whole text
                raise DurationError(f"not a duration: {text!r} (use e.g. 90s, 12h, 180d)")
            seconds += float(m.group(1)) * _UNITS[m.group(2) or "s"]
            pos = m.end()
        if pos == 0:
            raise DurationError(f"not a duration: {text!r} (use e.g. 90s, 12h, 180d)")
    if not math.isfinite(seconds) or seconds <= 0:
        raise DurationError(f"a duration must be positive, got {text!r}")
    return seconds


def expiry_at(now: float, lifetime: float) -> float:
    """A key expiry ``lifetime`` from ``now``, on a whole second (the wire form is RFC 3339 seconds, so
    control and clients then compare the same instant)."""
    return float(math.ceil(now + lifetime))


def key_lifetime(store: Store) -> float:
    """The tailnet's node-key lifetime (what the serving process was started with, else the default)."""
    raw = store.get_meta(META_KEY_EXPIRY)
    try:
        return parse_duration(raw) if raw else DEFAULT_KEY_EXPIRY
    except DurationError:
        return DEFAULT_KEY_EXPIRY


def set_key_lifetime(store: Store, seconds: float) -> None:
    store.set_meta(META_KEY_EXPIRY, repr(float(seconds)))


class NodeNotFound(LookupError):
    """No node (or more than one) answers to the ID or hostname given."""


def find_node(store: Store, ref: int | str) -> Node:
    """The node with this ID (an int or all digits) or hostname; NodeNotFound if none or ambiguous."""
    if isinstance(ref, int) or ref.strip().isdigit():
        node = store.node(int(ref))
        if node is None:
            raise NodeNotFound(f"no node with ID {ref}")
        return node
    matches = [n for n in store.nodes() if n.hostname == ref]
    if not matches:
        raise NodeNotFound(f"no node named {ref!r}")
    if len(matches) > 1:
        ids = ", ".join(str(n.id) for n in matches)
        raise NodeNotFound(f"{len(matches)} nodes are named {ref!r} (IDs {ids}); give the ID")
    return matches[0]


def renewed(store: Store, now: float, seconds: float | None = None) -> float:
    """The expiry ``nodes extend`` gives: ``seconds`` (default: the tailnet's key lifetime) from ``now``."""
    return expiry_at(now, key_lifetime(store) if seconds is None else seconds)
