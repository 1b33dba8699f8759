"""wire.http1_body: one bounded request body off an h11 server connection, driven with bytes only."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.errors import ParseError
from pytsnet.wire.http1_body import BodyReader, BodyTooLarge, BodyTruncated, MalformedHttp

HEAD = b"POST /x HTTP/1.1\r\nHost: node\r\n"


def _reader(data: bytes, max_body: int = 100) -> tuple[h11.Connection, BodyReader]:
    """A server connection fed ``data``, its request head taken; a reader for the body."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    assert isinstance(conn.next_event(), h11.Request)
    return conn, BodyReader(conn, max_body)


def _chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def test_content_length_body_read_with_the_head() -> None:
    _, r = _reader(HEAD + b"Content-Length: 5\r\n\r\nhello")
    assert r.poll() == b"hello"


def test_no_body_is_empty() -> None:
    _, r = _reader(b"GET / HTTP/1.1\r\nHost: node\r\n\r\n")
    assert r.poll() == b""


@pytest.mark.parametrize("step", [1, 3, 64])
def test_fed_in_pieces(step: int) -> None:
    body = b"0123456789" * 7
    _, r = _reader(HEAD + b"Content-Length: 70\r\n\r\n")
    assert r.poll() is None
    got = None
    for i in range(0, len(body), step):
        assert got is None  # no body before its last byte
        got = r.receive_data(body[i:i + step])
    assert got == body


def test_chunked_body_is_joined() -> None:
    _, r = _reader(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    data = _chunked(b"abc", b"defg")
    assert r.receive_data(data[:8]) is None  # "3\r\nabc\r\n": the first chunk only
    assert r.receive_data(data[8:]) == b"abcdefg"


def test_the_connection_is_ready_for_the_answer() -> None:
    conn, r = _reader(HEAD + b"Content-Length: 2\r\n\r\nok")
    assert r.poll() == b"ok"
    assert r.poll() == b"ok" and r.receive_data(b"late") == b"ok"  # done: nothing more is taken
    assert conn.their_state is h11.DONE
    conn.send(h11.Response(status_code=204, headers=[]))  # h11 accepts the answer now


@pytest.mark.parametrize("framing", [b"Content-Length: 101\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n"])
def test_over_the_cap_is_too_large(framing: bytes) -> None:
    data = b"x" * 101
    if b"chunked" in framing:
        data = _chunked(data[:60], data[60:])
    _, r = _reader(HEAD + framing, max_body=100)
    with pytest.raises(BodyTooLarge):
        r.receive_data(data)


def test_exactly_the_cap_is_allowed() -> None:
    _, r = _reader(HEAD + b"Content-Length: 100\r\n\r\n" + b"x" * 100, max_body=100)
    assert r.poll() == b"x" * 100


@pytest.mark.parametrize("framing,partial", [
    (b"Content-Length: 10\r\n\r\n", b"abc"),
    (b"Transfer-Encoding: chunked\r\n\r\n", b"3\r\nabc\r\n"),
    (b"Transfer-Encoding: chunked\r\n\r\n", b"a\r\nab"),
])
def test_a_close_inside_the_body_is_truncated(framing: bytes, partial: bytes) -> None:
    _, r = _reader(HEAD + framing + partial)
    assert r.poll() is None
    with pytest.raises(BodyTruncated):
        r.receive_data(b"")


def test_a_bad_chunk_header_is_malformed() -> None:
    _, r = _reader(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(MalformedHttp) as e:
        r.receive_data(b"zz\r\nabc\r\n")
    assert not isinstance(e.value, (BodyTruncated, BodyTooLarge))


def test_errors_are_the_wire_parse_family() -> None:
    assert issubclass(BodyTooLarge, ParseError) and issubclass(BodyTruncated, ParseError)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=64))
def test_any_bytes_give_a_body_or_a_typed_error(data: bytes, max_body: int) -> None:
    """Whatever follows a chunked head: a body within the cap, None, or one of our errors."""
    _, r = _reader(HEAD + b"Transfer-Encoding: chunked\r\n\r\n", max_body=max_body)
    try:
        body = r.receive_data(data)
        if body is None:
            body = r.receive_data(b"")
    except MalformedHttp:
        return
    assert body is not None and len(body) <= max_body
