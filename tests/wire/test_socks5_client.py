"""The SOCKS5 client codec (the egress worker's upstream hop), byte for byte against RFC 1928/1929,
and against our own server codec."""

from __future__ import annotations

import pytest

from pytsnet.wire.socks5 import (
    Rep,
    Socks5AuthFailed,
    Socks5Bound,
    Socks5Client,
    Socks5Malformed,
    Socks5NoMethod,
    Socks5Refused,
    Socks5Server,
)


def test_no_auth_connect_to_an_ipv4_target_rfc1928_bytes() -> None:
    c = Socks5Client("192.0.2.7", 8080)
    assert c.data_to_send() == b"\x05\x01\x00"  # VER NMETHODS METHODS(00)
    assert c.receive(b"\x05\x00") is None
    assert c.data_to_send() == b"\x05\x01\x00\x01\xc0\x00\x02\x07\x1f\x90"  # CONNECT 192.0.2.7:8080
    got = c.receive(b"\x05\x00\x00\x01\x0a\x00\x00\x01\x30\x39hello")
    assert got == Socks5Bound("10.0.0.1", 12345) and c.state == "done"
    assert c.trailing() == b"hello"


def test_user_pass_and_a_domain_target_rfc1929_bytes_in_pieces() -> None:
    c = Socks5Client("example.com", 443, "tsnet", "pw")
    assert c.data_to_send() == b"\x05\x02\x00\x02"
    assert c.receive(b"\x05") is None and c.receive(b"\x02") is None
    assert c.data_to_send() == b"\x01\x05tsnet\x02pw"
    assert c.receive(b"\x01\x00") is None
    assert c.data_to_send() == b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
    reply = b"\x05\x00\x00\x04" + bytes(15) + b"\x01" + b"\x00\x50"
    for i in range(len(reply) - 1):
        assert c.receive(reply[i:i + 1]) is None
    assert c.receive(reply[-1:]) == Socks5Bound("::1", 80)
    assert c.trailing() == b""


def test_ipv6_target_encoding() -> None:
    c = Socks5Client("2001:db8::1", 22)
    c.data_to_send()
    c.receive(b"\x05\x00")
    ip = bytes.fromhex("20010db8" + "00" * 11 + "01")
    assert c.data_to_send() == b"\x05\x01\x00\x04" + ip + b"\x00\x16"


@pytest.mark.parametrize("rep", [Rep.GENERAL_FAILURE, Rep.NOT_ALLOWED, Rep.NETWORK_UNREACHABLE,
                                 Rep.HOST_UNREACHABLE, Rep.CONNECTION_REFUSED])
def test_a_refusal_carries_the_proxys_rep(rep: Rep) -> None:
    c = Socks5Client("192.0.2.1", 80)
    c.receive(b"\x05\x00")
    with pytest.raises(Socks5Refused) as e:
        c.receive(bytes([5, rep, 0, 1, 0, 0, 0, 0, 0, 0]))
    assert e.value.rep == rep and c.state == "failed"
    with pytest.raises(Socks5Malformed):
        c.receive(b"x")


def test_method_and_auth_refusals() -> None:
    c = Socks5Client("192.0.2.1", 80)
    with pytest.raises(Socks5NoMethod):
        c.receive(b"\x05\xff")
    c = Socks5Client("192.0.2.1", 80)  # no credentials: 02 was not offered
    with pytest.raises(Socks5Malformed):
        c.receive(b"\x05\x02")
    c = Socks5Client("192.0.2.1", 80, "tsnet", "wrong")
    c.receive(b"\x05\x02")
    with pytest.raises(Socks5AuthFailed):
        c.receive(b"\x01\x01")


@pytest.mark.parametrize("data", [b"\x04\x00", b"\x05\x00\x00", b""])
def test_malformed_or_eof_from_the_proxy(data: bytes) -> None:
    c = Socks5Client("192.0.2.1", 80)
    with pytest.raises(Socks5Malformed):
        c.receive(data)


def test_bad_targets_and_credentials_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        Socks5Client("192.0.2.1", 70000)
    with pytest.raises(ValueError):
        Socks5Client("x" * 256, 80)
    with pytest.raises(ValueError):
        Socks5Client("192.0.2.1", 80, "", "pw")


@pytest.mark.parametrize("creds", [None, ("tsnet", "s3cret")])
def test_client_against_our_server_codec(creds: tuple[str, str] | None) -> None:
    c = Socks5Client("example.com", 8443, *(creds or (None, None)))
    s = Socks5Server(*(creds or (None, None)))
    req = None
    while req is None:
        req = s.receive(c.data_to_send())
        if out := s.data_to_send():
            assert c.receive(out) is None
    assert (req.host, req.port, req.command) == ("example.com", 8443, "connect")
    assert c.receive(s.reply(Rep.SUCCEEDED, "100.64.0.1", 5555) + b"early") == Socks5Bound("100.64.0.1", 5555)
    assert c.trailing() == b"early"
