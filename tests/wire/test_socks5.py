"""wire/socks5.py: RFC 1928/1929 byte vectors, each refusal's reply bytes, fuzzing (typed errors only)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.errors import ProtocolError
from pytsnet.wire.socks5 import (
    MAX_HANDSHAKE,
    Atyp,
    Rep,
    Socks5AuthFailed,
    Socks5Error,
    Socks5Malformed,
    Socks5NoMethod,
    Socks5Request,
    Socks5Server,
    Socks5Unsupported,
    decode_udp,
    encode_reply,
    encode_udp,
)

GREET_USERPASS = bytes.fromhex("050102")  # VER 5, NMETHODS 1, USERNAME/PASSWORD
AUTH_OK = b"\x01\x05tsnet\x04cred"  # RFC 1929: VER 1, ULEN, UNAME, PLEN, PASSWD
CONNECT_DOMAIN = b"\x05\x01\x00\x03\x03web\x1f\x90"  # CONNECT web:8080


def server() -> Socks5Server:
    return Socks5Server("tsnet", "cred")


def test_rfc_vectors_connect_by_domain_with_auth() -> None:
    s = server()
    assert s.receive(GREET_USERPASS) is None
    assert s.data_to_send() == b"\x05\x02"
    assert s.receive(AUTH_OK) is None
    assert s.data_to_send() == b"\x01\x00"
    req = s.receive(CONNECT_DOMAIN)
    assert req == Socks5Request("connect", "web", 8080, Atyp.DOMAIN)
    assert s.reply(Rep.SUCCEEDED, "100.64.0.1", 40000) == bytes.fromhex("05000001644000019c40")
    assert s.state == "done"


def test_all_three_messages_at_once_and_early_tunnel_bytes() -> None:
    s = server()
    req = s.receive(GREET_USERPASS + AUTH_OK + CONNECT_DOMAIN + b"GET / HTTP/1.1\r\n")
    assert req is not None and req.host == "web"
    assert s.data_to_send() == b"\x05\x02\x01\x00"
    s.reply(Rep.SUCCEEDED)
    assert s.trailing() == b"GET / HTTP/1.1\r\n"


def test_byte_at_a_time() -> None:
    s = server()
    msg = GREET_USERPASS + AUTH_OK + b"\x05\x01\x00\x01\x64\x40\x00\x02\x00\x50"
    got = [s.receive(bytes([b])) for b in msg]
    assert got[:-1] == [None] * (len(msg) - 1)
    assert got[-1] == Socks5Request("connect", "100.64.0.2", 80, Atyp.IPV4)


def test_ipv6_target_and_reply() -> None:
    s = Socks5Server()  # no auth configured: method 00
    s.receive(b"\x05\x01\x00")
    assert s.data_to_send() == b"\x05\x00"
    ip6 = bytes.fromhex("fd7a115ca1e0ab120000000000000001")
    req = s.receive(b"\x05\x01\x00\x04" + ip6 + b"\x00\x16")
    assert req == Socks5Request("connect", "fd7a:115c:a1e0:ab12::1", 22, Atyp.IPV6)
    assert s.reply(Rep.SUCCEEDED, "fd7a:115c:a1e0:ab12::2", 1) == b"\x05\x00\x00\x04" + bytes.fromhex(
        "fd7a115ca1e0ab120000000000000002") + b"\x00\x01"


def test_udp_associate_request() -> None:
    s = server()
    req = s.receive(GREET_USERPASS + AUTH_OK + b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
    assert req == Socks5Request("udp_associate", "0.0.0.0", 0, Atyp.IPV4)


@pytest.mark.parametrize(("rep", "code"), [(Rep.NOT_ALLOWED, 2), (Rep.HOST_UNREACHABLE, 4),
                                           (Rep.CONNECTION_REFUSED, 5), (Rep.NETWORK_UNREACHABLE, 3)])
def test_failure_replies_bind_zero(rep: Rep, code: int) -> None:
    s = server()
    s.receive(GREET_USERPASS + AUTH_OK + CONNECT_DOMAIN)
    assert s.reply(rep, "100.64.0.1", 5) == bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0])
    with pytest.raises(Socks5Error):
        s.receive(b"more")


def test_no_acceptable_method() -> None:
    s = server()
    with pytest.raises(Socks5NoMethod) as e:
        s.receive(b"\x05\x01\x00")  # only "no auth", but a credential is required
    assert e.value.reply == b"\x05\xff"


@pytest.mark.parametrize("auth", [b"\x01\x05tsnet\x04nope", b"\x01\x04root\x04cred", b"\x01\x00\x04cred",
                                  b"\x01\x05tsnet\x00", b"\x02\x05tsnet\x04cred"])
def test_wrong_credentials(auth: bytes) -> None:
    s = server()
    with pytest.raises(Socks5AuthFailed) as e:
        s.receive(GREET_USERPASS + auth)
    assert e.value.reply == b"\x01\x01"
    assert s.data_to_send() == b"\x05\x02"  # the method choice went out; the failure is the error's


def test_bind_and_unknown_commands_and_address_types() -> None:
    s = server()
    with pytest.raises(Socks5Unsupported) as e:
        s.receive(GREET_USERPASS + AUTH_OK + b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50")
    assert e.value.reply[:2] == b"\x05\x07"
    s = server()
    with pytest.raises(Socks5Unsupported) as e:
        s.receive(GREET_USERPASS + AUTH_OK + b"\x05\x01\x00\x09abc")
    assert e.value.reply[:2] == b"\x05\x08"


@pytest.mark.parametrize("bad", [b"\x04\x01\x00", b"\x05\x00", b"GET / HTTP/1.1\r\n"])
def test_bad_greetings(bad: bytes) -> None:
    with pytest.raises(Socks5Malformed) as e:
        server().receive(bad)
    assert e.value.reply == b"\x05\xff"


@pytest.mark.parametrize("req", [b"\x05\x01\x01\x01\x7f\x00\x00\x01\x00\x50",  # RSV not zero
                                 b"\x05\x01\x00\x03\x00\x00\x50",  # empty name
                                 b"\x05\x01\x00\x03\x03w\xffb\x00\x50",  # not ASCII
                                 b"\x05\x01\x00\x03\x05a b/c\x00\x50"])  # not a host name
def test_malformed_requests_general_failure(req: bytes) -> None:
    with pytest.raises(Socks5Malformed) as e:
        server().receive(GREET_USERPASS + AUTH_OK + req)
    assert e.value.reply[:2] == b"\x05\x01"


def test_buffer_bounded_before_request() -> None:
    s = server()
    s.receive(b"\x05\xff" + bytes(200))  # a greeting still incomplete
    with pytest.raises(Socks5Malformed):
        s.receive(bytes(MAX_HANDSHAKE))
    with pytest.raises(Socks5Malformed):
        s.receive(b"x")  # failed stays failed


def test_reply_requires_a_request() -> None:
    with pytest.raises(ProtocolError):
        server().reply(Rep.SUCCEEDED)


def test_udp_header_roundtrip_vectors() -> None:
    raw = b"\x00\x00\x00\x01\x64\x40\x00\x02\x00\x35" + b"query"
    d = decode_udp(raw)
    assert (d.host, d.port, d.data, d.atyp) == ("100.64.0.2", 53, b"query", Atyp.IPV4)
    assert encode_udp("100.64.0.2", 53, b"query") == raw
    assert decode_udp(encode_udp("web", 9, b"")).host == "web"
    assert encode_udp("::1", 1, b"x") == b"\x00\x00\x00\x04" + bytes(15) + b"\x01\x00\x01x"


@pytest.mark.parametrize("bad", [b"", b"\x00\x00\x00", b"\x00\x01\x00\x01\x7f\x00\x00\x01\x00\x01",
                                 b"\x00\x00\x00\x01\x7f\x00"])
def test_udp_header_malformed(bad: bytes) -> None:
    with pytest.raises(Socks5Malformed):
        decode_udp(bad)


def test_udp_fragments_refused() -> None:
    with pytest.raises(Socks5Unsupported):
        decode_udp(b"\x00\x00\x01\x01\x7f\x00\x00\x01\x00\x01x")


def test_encode_reply_rejects_what_it_cannot_encode() -> None:
    with pytest.raises(ValueError):
        encode_reply(Rep.SUCCEEDED, "a" * 256, 1)
    with pytest.raises(ValueError):
        encode_reply(Rep.SUCCEEDED, "127.0.0.1", 70000)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_fuzz_handshake_only_typed_errors(chunks: list[bytes]) -> None:
    s = server()
    try:
        for c in chunks:
            if s.receive(c) is not None:
                break
    except Socks5Error as e:
        assert isinstance(e.reply, bytes)
    assert len(s._buf) <= MAX_HANDSHAKE


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([Atyp.IPV4, Atyp.IPV6, Atyp.DOMAIN]), st.binary(min_size=0, max_size=40),
       st.integers(0, 65535), st.binary(max_size=64))
def test_fuzz_structured_requests(atyp: Atyp, addr: bytes, port: int, tail: bytes) -> None:
    length = bytes([len(addr)]) if atyp == Atyp.DOMAIN else b""
    body = bytes([atyp]) + length + addr + port.to_bytes(2, "big")
    s = server()
    try:
        req = s.receive(GREET_USERPASS + AUTH_OK + b"\x05\x01\x00" + body + tail)
    except Socks5Error:
        return
    if len(addr) == {Atyp.IPV4: 4, Atyp.IPV6: 16}.get(atyp, len(addr)):  # the whole request is there
        assert req is not None and req.port == port


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_udp_header(data: bytes) -> None:
    try:
        d = decode_udp(data)
    except Socks5Error:
        return
    assert decode_udp(encode_udp(d.host, d.port, d.data)) == d
