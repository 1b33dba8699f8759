"""Our own echo requests (the LocalAPI's ``ping?type=ICMP``): two sans-IO stacks wired back to back.

The requester remembers (peer, id, seq) and turns the matching reply into a round-trip time from
the ``now`` values passed in; replies it did not ask for, from another address, or after it gave
up are ignored and counted, and the table of outstanding requests is bounded.
"""

from __future__ import annotations

import ipaddress

import pytest

from pytsnet.netstack import icmp
from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.errors import SocketError
from pytsnet.netstack.interface import Stack, ip_packet

A4, B4 = ipaddress.IPv4Address("100.64.0.1"), ipaddress.IPv4Address("100.64.0.2")
A6, B6 = ipaddress.IPv6Address("fd7a:115c:a1e0::1"), ipaddress.IPv6Address("fd7a:115c:a1e0::2")


def _pair(port: int = 0, **cfg: object) -> tuple[Stack, Stack]:
    a = Stack(StackConfig(addresses=(A4, A6), enable_ipv6=True, **cfg))  # type: ignore[arg-type]
    b = Stack(StackConfig(addresses=(B4, B6), enable_ipv6=True, tsmp_peerapi_port=port))
    return a, b


def _deliver(frm: Stack, to: Stack, now: float) -> int:
    out = frm.poll(now)
    for p in out:
        to.receive(p, now)
    return len(out)


@pytest.mark.parametrize("dst", [B4, B6])
def test_echo_round_trip_time_from_now(dst: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    a, b = _pair()
    a.send_echo_request(dst, 0xBEEF, 7, b"tsping", now=10.0)
    assert a.echo_rtt(dst, 0xBEEF, 7) is None  # not answered yet
    assert _deliver(a, b, 10.0) == 1  # b's netstack answers the echo
    assert _deliver(b, a, 10.25) == 1
    assert a.echo_rtt(dst, 0xBEEF, 7) == pytest.approx(0.25)
    assert a.echo_rtt(dst, 0xBEEF, 7) is None  # taken once
    assert a.drops["icmp_ignored"] == 0


def test_unasked_wrong_source_and_late_replies_are_ignored() -> None:
    a, b = _pair()
    reply = icmp.emit_icmpv4(icmp.echo(icmp.ICMP_ECHO_REPLY, 1, 1, b"x"))
    a.receive(ip_packet(B4, A4, icmp.PROTO_ICMP, reply, 64, 1), 1.0)  # never asked
    assert a.drops["icmp_ignored"] == 1
    a.send_echo_request(B4, 1, 1, b"x", now=1.0)
    other = ipaddress.IPv4Address("100.64.0.3")
    a.receive(ip_packet(other, A4, icmp.PROTO_ICMP, reply, 64, 2), 1.1)  # same id/seq, not the peer asked
    assert a.drops["icmp_ignored"] == 2 and a.echo_rtt(B4, 1, 1) is None
    a.forget_echo(B4, 1, 1)  # the asker timed out
    _deliver(a, b, 1.0)
    _deliver(b, a, 9.0)
    assert a.echo_rtt(B4, 1, 1) is None and a.drops["icmp_ignored"] == 3


def test_pending_echoes_are_bounded() -> None:
    a, b = _pair(max_pending_echoes=2)
    for seq in range(3):
        a.send_echo_request(B4, 5, seq, b"", now=0.0)
    assert a.drops["echo_pending_evicted"] == 1
    _deliver(a, b, 0.0)
    _deliver(b, a, 0.5)
    assert a.echo_rtt(B4, 5, 0) is None  # the oldest was forgotten: its reply ignored
    assert a.echo_rtt(B4, 5, 1) == a.echo_rtt(B4, 5, 2) == pytest.approx(0.5)
    assert a.drops["icmp_ignored"] == 1


def test_no_address_of_the_family_is_a_typed_error() -> None:
    a = Stack(StackConfig(addresses=(A4,)))
    with pytest.raises(SocketError):
        a.send_echo_request(B6, 1, 1, b"", now=0.0)


@pytest.mark.parametrize("dst", [B4, B6])
def test_tsmp_ping_answered_with_pong_and_peerapi_port(dst: ipaddress.IPv4Address | ipaddress.IPv6Address
                                                        ) -> None:
    """Go's TSMP: ``'p'`` + 8 bytes (IP protocol 99), answered ``'o'`` + the 8 bytes + the PeerAPI port."""
    a, b = _pair(port=46123)
    a.send_tsmp_ping(dst, b"12345678", now=3.0)
    (ping,) = a.poll(3.0)
    assert ping[9 if dst.version == 4 else 6] == 99 and ping.endswith(b"p12345678")
    b.receive(ping, 3.0)
    (pong,) = b.poll(3.0)
    assert pong.endswith(b"o12345678" + (46123).to_bytes(2, "big"))
    assert a.tsmp_pong(dst, b"12345678") is None
    a.receive(pong, 3.5)
    assert a.tsmp_pong(dst, b"12345678") == (pytest.approx(0.5), 46123)
    assert a.tsmp_pong(dst, b"12345678") is None  # taken once


def test_tsmp_unasked_short_and_forgotten_pongs_are_counted() -> None:
    a, b = _pair()
    a.receive(ip_packet(B4, A4, 99, b"o" + b"x" * 8, 64, 1), 1.0)  # never asked
    a.receive(ip_packet(B4, A4, 99, b"p1234", 64, 2), 1.0)  # a short ping: no pong
    assert a.drops["tsmp_ignored"] == 2 and a.poll(1.0) == []
    a.send_tsmp_ping(B4, b"abcdefgh", now=1.0)
    a.forget_tsmp(B4, b"abcdefgh")
    _deliver(a, b, 1.0)
    _deliver(b, a, 2.0)
    assert a.tsmp_pong(B4, b"abcdefgh") is None and a.drops["tsmp_ignored"] == 3
    with pytest.raises(ValueError):
        a.send_tsmp_ping(B4, b"short", now=1.0)
