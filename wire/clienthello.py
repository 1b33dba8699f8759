"""The server name a TLS ClientHello asks for (RFC 8446 §4.1.2, RFC 6066 §3 ``server_name``), sans-IO.

A Funnel ingress routes a public connection by it without terminating TLS (Tailscale's ingress nodes
do the same). ``client_hello_sni`` takes the bytes received so far: None while the ClientHello is
still incomplete, the host name once it is, ``ClientHelloError`` for anything else (not TLS, not a
ClientHello, no or a malformed ``server_name``, past ``MAX_HELLO``). The handshake message may span
several TLS records (large post-quantum key shares), which are reassembled.
"""

from __future__ import annotations

from pytsnet.wire.errors import ParseError

__all__ = ["MAX_HELLO", "ClientHelloError", "client_hello_sni"]

MAX_HELLO = 16 * 1024
"""Bytes of records read at most before giving up (a ClientHello is a few hundred to ~2 KiB)."""
_HANDSHAKE, _CLIENT_HELLO, _SNI_EXT, _HOST_NAME = 22, 1, 0, 0


class ClientHelloError(ParseError):
    """Not a TLS ClientHello naming a server: the ingress drops the connection."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ClientHelloError("truncated ClientHello")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vec(self, n: int) -> bytes:
        return self.take(self.u(n))


def _handshake(data: bytes) -> bytes | None:
    """The first handshake message's bytes reassembled from the records, None while incomplete."""
    if len(data) > MAX_HELLO:
        data = data[:MAX_HELLO]
    body, pos = bytearray(), 0
    while True:
        if len(data) - pos < 5:
            break
        if data[pos] != _HANDSHAKE or data[pos + 1] != 3:
            raise ClientHelloError("not a TLS handshake record")
        length = int.from_bytes(data[pos + 3:pos + 5], "big")
        if length == 0 or length > 16384 + 256:
            raise ClientHelloError(f"bad TLS record length {length}")
        if len(data) - pos - 5 < length:
            break
        body += data[pos + 5:pos + 5 + length]
        pos += 5 + length
        if len(body) >= 4:
            if body[0] != _CLIENT_HELLO:
                raise ClientHelloError("first handshake message is not a ClientHello")
            need = 4 + int.from_bytes(body[1:4], "big")
            if need > MAX_HELLO:
                raise ClientHelloError("ClientHello too large")
            if len(body) >= need:
                return bytes(body[4:need])
    if pos + 5 > MAX_HELLO or len(data) >= MAX_HELLO:
        raise ClientHelloError("no complete ClientHello within the limit")
    if data and data[0] != _HANDSHAKE:
        raise ClientHelloError("not a TLS handshake record")
    return None


def client_hello_sni(data: bytes) -> str | None:
    """The lowercased ``server_name`` (host_name) of the ClientHello at the start of ``data``."""
    hello = _handshake(data)
    if hello is None:
        return None
    r = _Reader(hello)
    r.take(2 + 32)  # legacy_version, random
    r.vec(1)  # legacy_session_id
    r.vec(2)  # cipher_suites
    r.vec(1)  # legacy_compression_methods
    if r.pos == len(hello):
        raise ClientHelloError("ClientHello without extensions: no server name")
    exts = _Reader(r.vec(2))
    while exts.pos < len(exts.data):
        kind, body = exts.u(2), exts.vec(2)
        if kind != _SNI_EXT:
            continue
        names = _Reader(_Reader(body).vec(2))
        while names.pos < len(names.data):
            name_type, name = names.u(1), names.vec(2)
            if name_type == _HOST_NAME:
                try:
                    text = name.decode("ascii")
                except UnicodeDecodeError:
                    raise ClientHelloError("server name is not ASCII") from None
                if not text or len(text) > 253 or not all(c.isalnum() or c in "-._" for c in text):
                    raise ClientHelloError("malformed server name")
                return text.rstrip(".").lower()
        raise ClientHelloError("server_name extension without a host name")
    raise ClientHelloError("no server_name extension")
