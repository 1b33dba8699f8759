"""The ingress's SNI reader (``wire/clienthello.py``) against real ClientHellos from Python's ssl
(TLS 1.2 and 1.3 clients) and against junk: a name, None while incomplete, or the typed error."""

from __future__ import annotations

import contextlib
import functools
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.clienthello import MAX_HELLO, ClientHelloError, client_hello_sni


def hello(name: str | None, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> bytes:
    ctx = ssl.create_default_context()
    ctx.maximum_version = version
    if name is None:
        ctx.check_hostname = False
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_real_client_hello_names_its_server(version: ssl.TLSVersion) -> None:
    data = hello("Web.LocalNet.ts.net.", version)
    assert client_hello_sni(data) == "web.localnet.ts.net"
    assert all(client_hello_sni(data[:k]) is None for k in range(len(data)))  # incomplete: wait


def test_split_across_records_is_reassembled() -> None:
    data = hello("web.localnet.ts.net")
    body = data[5:]
    half = len(body) // 2
    two = b"\x16\x03\x01" + half.to_bytes(2, "big") + body[:half] + \
        b"\x16\x03\x01" + (len(body) - half).to_bytes(2, "big") + body[half:]
    assert client_hello_sni(two[:-1]) is None
    assert client_hello_sni(two) == "web.localnet.ts.net"


@pytest.mark.parametrize(("data", "why"), [
    (b"GET / HTTP/1.1\r\n\r\n", "not a TLS handshake record"),
    (b"\x17\x03\x03\x00\x05hello", "not a TLS handshake record"),
    (b"\x16\x03\x01\x00\x00", "bad TLS record length"),
    (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not a ClientHello"),
])
def test_junk_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(ClientHelloError, match=why):
        client_hello_sni(data)


def test_no_server_name_is_refused() -> None:
    with pytest.raises(ClientHelloError, match="no server_name"):
        client_hello_sni(hello(None))


def test_oversized_hello_is_refused() -> None:
    big = b"\x16\x03\x01\x40\x00" + b"\x01\xff\xff\xff" + b"\x00" * (16384 - 4)
    with pytest.raises(ClientHelloError):
        client_hello_sni(big + big[:5])
    assert MAX_HELLO == 16 * 1024


@given(st.binary(max_size=600))
def test_arbitrary_bytes_name_wait_or_typed_error(data: bytes) -> None:
    try:
        out = client_hello_sni(data)
    except ClientHelloError:
        return
    assert out is None or (out and out == out.lower())


@functools.cache
def real_hello() -> bytes:
    return hello("web.localnet.ts.net")


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=8))
def test_corrupted_real_hello_never_crashes(at: int, junk: bytes) -> None:
    data = bytearray(real_hello())
    at %= len(data)
    data[at:at + len(junk)] = junk
    with contextlib.suppress(ClientHelloError):
        client_hello_sni(bytes(data))
