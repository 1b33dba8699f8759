"""SYN cookies (RFC 4987 §3.6): a listener whose half-open queue is full answers statelessly.

The cookie is our ISN, built as Linux's ``secure_tcp_syn_cookie`` and gVisor's ``createCookie``::

    cookie = A_c + client_isn + (c << 24) + ((B_c + mss_index) mod 2**24)

where ``c`` counts ``period``-second intervals and ``A_c``/``B_c`` are a keyed BLAKE2s of the
4-tuple and the client's ISN (Linux hashes only the 4-tuple, so there a cookie stays valid for a
neighbouring ISN with another MSS) under a key of interval ``c`` alone. Keys come from
``secrets`` (unless a test injects a source), are made lazily and forgotten once ``max_age``
intervals old: an old cookie can never validate, and a key that leaked is worth at most
``max_age * period`` seconds. The final ACK (``ack - 1``) is checked against the live keys; only
then does a connection exist.

Options a plain cookie loses (window scale, SACK-permitted) ride in the low ``TS_OPT_BITS`` bits
of our SYN-ACK's TSval when the peer offered timestamps, which the peer echoes in TSecr (Linux's
``cookie_init_timestamp``); the TSval is rounded down, never up, so our timestamps stay monotonic.
Without timestamps the connection gets neither (64 KiB window, no SACK), as on Linux.

Nothing here logs; the keys never appear in ``repr``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections.abc import Callable

from pytsnet.netstack.tcp.segment import ACK, RST, SYN, TcpSegment
from pytsnet.netstack.tcp.seq import SEQ_MASK

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MSS_TABLE = (536, 1220, 1240, 1460)
"""MSS values a cookie can carry (2 bits): IPv4's minimum, the tailnet's 1280-byte MTU on IPv6 and
IPv4, and Ethernet. A peer gets the largest entry not above what it announced."""

COOKIE_BITS = 24
COOKIE_MASK = (1 << COOKIE_BITS) - 1
TS_OPT_BITS = 5  # 4 bits window scale (15 = none), 1 bit SACK-permitted
TS_OPT_MASK = (1 << TS_OPT_BITS) - 1
_NO_WSCALE = 0xF
_SACK_BIT = 0x10


class SynCookies:
    """Makes and checks cookies; holds one secret key per live time interval."""

    __slots__ = ("_key_source", "_keys", "max_age", "period")

    def __init__(self, period: float = 64.0, max_age: int = 2,
                 key_source: Callable[[int], bytes] = secrets.token_bytes) -> None:
        if period <= 0 or max_age < 1:
            raise ValueError("period must be positive and max_age at least 1")
        self.period = period
        self.max_age = max_age
        self._key_source = key_source
        self._keys: dict[int, bytes] = {}

    def __repr__(self) -> str:
        return f"SynCookies(period={self.period}, max_age={self.max_age}, live_keys={len(self._keys)})"

    @property
    def validity(self) -> float:
        """How long after it was made a cookie is still accepted, at most."""
        return self.period * self.max_age

    def _count(self, now: float) -> int:
        return int(now // self.period)

    def _prune(self, count: int) -> None:
        for c in [c for c in self._keys if c <= count - self.max_age or c > count]:
            del self._keys[c]

    @staticmethod
    def _hashes(key: bytes, local: IPAddress, lport: int, remote: IPAddress, rport: int,
                isn: int) -> tuple[int, int]:
        h = hashlib.blake2s(local.packed + lport.to_bytes(2, "big") + remote.packed + rport.to_bytes(2, "big")
                            + isn.to_bytes(4, "big"), key=key, digest_size=8).digest()
        return int.from_bytes(h[:4], "big"), int.from_bytes(h[4:], "big")

    def make(self, local: IPAddress, lport: int, remote: IPAddress, rport: int, client_isn: int,
             mss_index: int, now: float) -> int:
        """The ISN for a SYN-ACK answering ``client_isn``, carrying ``mss_index``."""
        if not 0 <= mss_index < len(MSS_TABLE):
            raise ValueError("mss_index out of range")
        count = self._count(now)
        self._prune(count)
        key = self._keys.get(count)
        if key is None:
            key = self._keys[count] = self._key_source(32)
        a, b = self._hashes(key, local, lport, remote, rport, client_isn)
        return (a + client_isn + ((count & 0xFF) << COOKIE_BITS) + ((b + mss_index) & COOKIE_MASK)) & SEQ_MASK

    def check(self, local: IPAddress, lport: int, remote: IPAddress, rport: int, client_isn: int,
              cookie: int, now: float) -> int | None:
        """The MSS index ``cookie`` carries, or None if it is forged, for another flow, or expired."""
        count = self._count(now)
        self._prune(count)
        for c in sorted(self._keys, reverse=True):
            a, b = self._hashes(self._keys[c], local, lport, remote, rport, client_isn)
            v = (cookie - a - client_isn) & SEQ_MASK
            if v >> COOKIE_BITS != c & 0xFF:
                continue
            index = (v - b) & COOKIE_MASK
            if index < len(MSS_TABLE):
                return index
        return None


def mss_index(peer_mss: int) -> int:
    """The largest table entry not above the peer's MSS (index 0 when it is smaller than all)."""
    mss = peer_mss
    for i in range(len(MSS_TABLE) - 1, 0, -1):
        if mss >= MSS_TABLE[i]:
            return i
    return 0


def encode_ts_options(tsval: int, wscale: int | None, sack: bool) -> int:
    """``tsval`` with the negotiated options in its low bits, never above ``tsval``."""
    opts = (_NO_WSCALE if wscale is None else wscale) | (_SACK_BIT if sack else 0)
    if tsval & TS_OPT_MASK < opts:
        tsval -= TS_OPT_MASK + 1
    return ((tsval & ~TS_OPT_MASK) | opts) & SEQ_MASK


def decode_ts_options(tsecr: int) -> tuple[int | None, bool]:
    """(window scale or None, SACK-permitted) from the TSecr of the cookie's ACK."""
    ws = tsecr & 0xF
    return (None if ws == _NO_WSCALE else ws), bool(tsecr & _SACK_BIT)


def is_cookie_ack(seg: TcpSegment) -> bool:
    """A segment that may complete a cookie handshake: ACK set, SYN and RST clear (data, FIN allowed)."""
    return bool(seg.flags & ACK) and not seg.flags & (SYN | RST)
