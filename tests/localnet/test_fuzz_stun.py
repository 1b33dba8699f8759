"""Fuzzed STUN: random datagrams and mutated Binding requests get an answer or a counted drop.

The wire parsers raise only ``StunParseError``; the server never lets an exception out of
``datagram_received`` (asyncio would log a traceback per datagram), counts every datagram as
answered or bad, and keeps answering valid requests on loopback after the fuzz.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pytsnet.localnet.stun_server import StunServer
from pytsnet.wire import stun

NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_tx = st.binary(min_size=12, max_size=12)
_requests = st.builds(stun.request, _tx)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A valid request, then truncated, extended, bit-flipped or with its header fields rewritten."""
    b = bytearray(draw(_requests))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["cut", "flip", "append", "type", "length", "attr_len"]))
        if op == "cut":
            del b[draw(st.integers(0, len(b))):]
        elif op == "flip" and b:
            b[draw(st.integers(0, len(b) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "append":
            b += draw(st.binary(min_size=1, max_size=40))
        elif op == "type" and len(b) >= 2:
            b[0:2] = struct.pack(">H", draw(st.integers(0, 0xFFFF)))
        elif op == "length" and len(b) >= 4:
            b[2:4] = struct.pack(">H", draw(st.integers(0, 0xFFFF)))
        elif op == "attr_len" and len(b) >= 24:
            b[22:24] = struct.pack(">H", draw(st.integers(0, 0xFFFF)))
    return bytes(b)


_address_value = st.builds(lambda fam, port, raw: bytes([0, fam]) + struct.pack(">H", port) + raw,
                           st.sampled_from([0, 1, 2, 3]), st.integers(0, 0xFFFF), st.binary(max_size=20))
_attribute = st.one_of(
    st.tuples(st.sampled_from([stun.ATTR_MAPPED_ADDRESS, stun.ATTR_XOR_MAPPED_ADDRESS,
                               stun.ATTR_XOR_MAPPED_ADDRESS_ALT]),
              st.one_of(_address_value, st.binary(max_size=8))),
    st.tuples(st.just(stun.ATTR_SOFTWARE), st.one_of(st.just(stun.SOFTWARE), st.binary(max_size=12))),
    st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=24)))


@st.composite
def _structured(draw: st.DrawFn) -> bytes:
    """Well-framed STUN messages (mostly requests and success responses) with arbitrary attributes,
    ending, when the declared length allows, in a correct FINGERPRINT."""
    mtype = draw(st.one_of(st.sampled_from([stun.BINDING_REQUEST, stun.BINDING_SUCCESS]),
                           st.integers(0, 0x3FFF)))
    body = b""
    for t, v in draw(st.lists(_attribute, max_size=6)):
        body += struct.pack(">HH", t, len(v)) + v + b"\0" * (-len(v) % 4)
    with_fp = draw(st.booleans())
    msg = struct.pack(">HH", mtype, len(body) + (stun.LEN_FINGERPRINT if with_fp else 0))
    msg += stun.MAGIC_COOKIE + draw(_tx) + body
    if with_fp:
        msg += struct.pack(">HHI", stun.ATTR_FINGERPRINT, 4, stun.fingerprint(msg))
    return msg


_datagrams = st.one_of(st.binary(max_size=120), _mutated(), _structured(), _requests,
                       st.binary(min_size=20, max_size=1500).map(lambda b: b[:4] + stun.MAGIC_COOKIE + b[8:]),
                       st.just(b"\0\1\xff\xff" + stun.MAGIC_COOKIE + bytes(12) + bytes(65000)))


def expect_request(b: bytes) -> bytes | None:
    """The parser's verdict: the transaction ID, or None for a refusal (only ``StunParseError``)."""
    try:
        return stun.parse_binding_request(b)
    except stun.StunParseError:
        return None


# -- the wire parsers --------------------------------------------------------------------------
@FUZZ
@given(b=_datagrams)
def test_fuzz_wire_parsers_raise_only_stun_parse_error(b: bytes) -> None:
    for parse in (stun.parse_message, stun.check_fingerprint, stun.parse_response):
        try:
            parse(b)
        except stun.StunParseError as e:
            assert "\n" not in str(e)
    tx = expect_request(b)
    if tx is not None:  # accepted ⇒ a real Binding request whose answer round-trips
        assert b[:2] == b"\0\1" and tx == b[8:20]
        stun.check_fingerprint(b)
        assert stun.parse_response(stun.response(tx, ipaddress.ip_address("192.0.2.1"), 7)) == (
            tx, (ipaddress.ip_address("192.0.2.1"), 7))


def test_mutation_strategy_reaches_both_verdicts() -> None:
    """Guard against a fuzz that only ever refuses (or only accepts): both outcomes occur."""
    verdicts: set[bool] = set()

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(b=st.one_of(_mutated(), _structured(), _requests))
    def probe(b: bytes) -> None:
        verdicts.add(expect_request(b) is not None)

    probe()
    assert verdicts == {True, False}


# -- the server's datagram handler -------------------------------------------------------------
class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


_addrs = st.sampled_from([("127.0.0.1", 40000), ("::1", 1, 0, 0), ("::ffff:10.0.0.1", 65535, 0, 0),
                          ("fe80::1%lo", 5, 0, 1), ("203.0.113.9", 0)])


@FUZZ
@given(b=_datagrams, addr=_addrs)
def test_fuzz_datagram_received_answers_or_counts_a_drop(b: bytes, addr: Any) -> None:
    srv = StunServer()
    t = _Transport()
    srv.transport = t  # type: ignore[assignment]
    srv.datagram_received(b, addr)  # must not raise
    tx = expect_request(b)
    assert (srv.stats.requests, srv.stats.bad) == ((1, 0) if tx is not None else (0, 1))
    assert len(t.sent) == srv.stats.requests
    if t.sent:
        reply, to = t.sent[0]
        got_tx, (ip, port) = stun.parse_response(reply)
        want = ipaddress.ip_address(addr[0].split("%")[0])
        if isinstance(want, ipaddress.IPv6Address) and want.ipv4_mapped is not None:
            want = want.ipv4_mapped
        assert to == addr and got_tx == tx and (ip, port) == (want, addr[1])


# -- end to end on loopback --------------------------------------------------------------------
@pytest.fixture
def running_server() -> Iterator[tuple[StunServer, list[dict[str, Any]]]]:
    """A StunServer on its own loop thread; loop-level errors (a traceback per datagram) are collected."""
    loop = asyncio.new_event_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    srv = StunServer()
    asyncio.run_coroutine_threadsafe(srv.start(), loop).result(5)
    try:
        yield srv, errors
    finally:
        loop.call_soon_threadsafe(srv.close)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)
        loop.close()


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.001)
    return cond()


def test_fuzz_running_server_on_loopback(running_server: tuple[StunServer, list[dict[str, Any]]],
                                         caplog: pytest.LogCaptureFixture) -> None:
    srv, errors = running_server
    want = {"requests": 0, "bad": 0}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)

        @settings(max_examples=300, deadline=None, derandomize=True,
                  phases=NO_SHRINK)  # a failing case waits out a timeout: report the first
        @given(b=_datagrams)
        def blast(b: bytes) -> None:
            s.sendto(b, ("127.0.0.1", srv.port))
            tx = expect_request(b)
            want["requests" if tx is not None else "bad"] += 1
            # paced: the server has counted this datagram before the next is sent, so the socket's
            # queue never overflows and a mismatch is the server's, not the kernel's
            st = srv.stats
            assert _wait(lambda: st.requests + st.busy + st.bad == want["requests"] + want["bad"], 5), st
            if tx is not None:
                assert stun.parse_response(s.recv(2048))[0] == tx

        with caplog.at_level(logging.DEBUG):
            blast()
    assert want["requests"] and want["bad"]
    seen = srv.stats
    assert _wait(lambda: seen.requests + seen.busy + seen.bad == want["requests"] + want["bad"]), seen
    assert (seen.requests + seen.busy, seen.bad) == (want["requests"], want["bad"])  # busy: a counted drop
    # still answering, with the right mapped address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.bind(("127.0.0.1", 0))
        c.settimeout(2)
        tx = stun.new_tx_id()
        c.sendto(stun.request(tx), ("127.0.0.1", srv.port))
        got_tx, (ip, port) = stun.parse_response(c.recv(2048))
        assert got_tx == tx and (str(ip), port) == c.getsockname()
    assert not errors, errors[:3]
    assert not [r for r in caplog.records if r.exc_info], "a datagram logged a traceback"


def test_a_full_send_queue_drops_and_counts_instead_of_queueing() -> None:
    """asyncio buffers datagrams the kernel will not take without bound and asks the protocol to
    pause; the server then drops answers (counted) until it may write again."""
    srv = StunServer()
    t = _Transport()
    srv.transport = t  # type: ignore[assignment]
    srv.pause_writing()
    srv.datagram_received(stun.request(stun.new_tx_id()), ("127.0.0.1", 9))
    assert (srv.stats.busy, srv.stats.requests, t.sent) == (1, 0, [])
    srv.resume_writing()
    srv.datagram_received(stun.request(stun.new_tx_id()), ("127.0.0.1", 9))
    assert (srv.stats.busy, srv.stats.requests, len(t.sent)) == (1, 1, 1)
