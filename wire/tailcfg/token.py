"""``tailcfg.TokenRequest``'s audience: what a node may ask an ID token for, checked where it is asked
(the LocalAPI's ``id-token``) and again where it is signed (localnet's control, which must not trust a
node's checks). Go only trims it; ours refuses anything that is not a short printable-ASCII word,
since it is signed into the token."""

from __future__ import annotations

__all__ = ["MAX_AUDIENCE", "BadAudience", "check_audience"]

MAX_AUDIENCE = 512
"""Longest audience (ours; Go has none): a URL or a service name, never a payload."""


class BadAudience(ValueError):
    """The audience is empty, too long or not printable ASCII without spaces: refused (400)."""


def check_audience(aud: str) -> str:
    """``aud`` if it may go into a token: 1..MAX_AUDIENCE printable ASCII characters, no spaces."""
    if not aud:
        raise BadAudience("no audience requested")
    if len(aud) > MAX_AUDIENCE:
        raise BadAudience(f"audience longer than {MAX_AUDIENCE} characters")
    if not all(0x21 <= ord(c) <= 0x7E for c in aud):
        raise BadAudience("audience must be printable ASCII without spaces")
    return aud
