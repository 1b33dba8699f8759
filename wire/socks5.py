"""SOCKS5 server side, sans-IO (RFC 1928, username/password auth RFC 1929; Go ``net/socks5``).

``Socks5Server`` is one client connection's handshake: bytes in (``receive``), the bytes to write
back out (``data_to_send``), and one ``Socks5Request`` (CONNECT or UDP ASSOCIATE, its target) once the
greeting, the authentication and the request have arrived; the caller dials and answers with
``reply``. Every malformed or refused input raises a ``Socks5Error`` carrying the bytes the server
should write before closing (Go writes the same: ``05 FF`` no acceptable method, ``01 01`` auth
failure, a reply with REP 01/07/08 for a bad request). Buffering is bounded by the largest legal
handshake message: more bytes than that before the request is complete is an error, not growth.

The UDP relay's datagram header (RFC 1928 §7) is ``decode_udp``/``encode_udp``. No I/O, no clock:
timeouts and the dial are the caller's.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Literal

from pytsnet.wire.errors import ParseError, ProtocolError

__all__ = ["MAX_HANDSHAKE", "Atyp", "Rep", "Socks5AuthFailed", "Socks5Error", "Socks5Malformed",
           "Socks5NoMethod", "Socks5Request", "Socks5Server", "Socks5Unsupported", "UdpDatagram",
           "decode_udp", "encode_reply", "encode_udp"]

VERSION = 5
AUTH_VERSION = 1
NO_AUTH, USER_PASS, NO_ACCEPTABLE = 0x00, 0x02, 0xFF
CMD_CONNECT, CMD_BIND, CMD_UDP_ASSOCIATE = 1, 2, 3

MAX_HANDSHAKE = (2 + 255) + (3 + 255 + 255) + (6 + 1 + 255 + 2)
"""Greeting + auth + request at their largest: a client may send all three at once, never more
before our reply to its request (after it, the bytes are the tunnel's and go to ``trailing``)."""


class Atyp(enum.IntEnum):
    IPV4 = 1
    DOMAIN = 3
    IPV6 = 4


class Rep(enum.IntEnum):
    """RFC 1928 §6 reply codes."""

    SUCCEEDED = 0
    GENERAL_FAILURE = 1
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TTL_EXPIRED = 6
    COMMAND_NOT_SUPPORTED = 7
    ADDRESS_TYPE_NOT_SUPPORTED = 8


class Socks5Error(ParseError):
    """The handshake cannot go on: write ``reply`` (may be empty) and close the connection."""

    reply: bytes = b""

    def __init__(self, message: str, reply: bytes = b"") -> None:
        super().__init__(message)
        self.reply = reply


class Socks5Malformed(Socks5Error):
    """Bytes that are not the SOCKS5 message expected now (or more of them than any could be)."""


class Socks5NoMethod(Socks5Error):
    """The client offers no authentication method we accept (``05 FF``)."""


class Socks5AuthFailed(Socks5Error, ProtocolError):
    """Wrong (or malformed) username/password (``01 01``)."""


class Socks5Unsupported(Socks5Error, ProtocolError):
    """A well-formed request we do not serve: BIND, or an unknown command / address type."""


@dataclass(frozen=True)
class Socks5Request:
    command: Literal["connect", "udp_associate"]
    host: str
    """A dotted IPv4, an IPv6 address (no brackets) or a domain name, as the client sent it."""
    port: int
    atyp: Atyp


@dataclass(frozen=True)
class UdpDatagram:
    host: str
    port: int
    data: bytes
    atyp: Atyp


def _host_of(atyp: int, raw: bytes) -> str:
    if atyp == Atyp.IPV4:
        return str(ipaddress.IPv4Address(raw))
    if atyp == Atyp.IPV6:
        return str(ipaddress.IPv6Address(raw))
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise Socks5Malformed("domain name is not ASCII") from None
    if not name or not all(c.isalnum() or c in "-._" for c in name):
        raise Socks5Malformed(f"not a host name: {name[:64]!r}")
    return name


def _parse_addr(buf: bytes | bytearray, at: int) -> tuple[Atyp, str, int, int] | None:
    """ATYP ADDR PORT at ``buf[at:]``: (atyp, host, port, end), None if incomplete.
    ``Socks5Unsupported`` for an unknown ATYP (its length is unknowable: the rest is unparseable)."""
    if len(buf) <= at:
        return None
    atyp = buf[at]
    if atyp == Atyp.IPV4:
        start, n = at + 1, 4
    elif atyp == Atyp.IPV6:
        start, n = at + 1, 16
    elif atyp == Atyp.DOMAIN:
        if len(buf) <= at + 1:
            return None
        start, n = at + 2, buf[at + 1]
        if n == 0:
            raise Socks5Malformed("empty domain name")
    else:
        raise Socks5Unsupported(f"address type {atyp}")
    end = start + n + 2
    if len(buf) < end:
        return None
    host = _host_of(atyp, bytes(buf[start:start + n]))
    return Atyp(atyp), host, int.from_bytes(buf[end - 2:end], "big"), end


def _encode_addr(host: str, port: int) -> bytes:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raw = host.encode("ascii")
        if not 0 < len(raw) <= 255:
            raise ValueError(f"domain name of {len(raw)} bytes") from None
        return bytes([Atyp.DOMAIN, len(raw)]) + raw + port.to_bytes(2, "big")
    atyp = Atyp.IPV4 if ip.version == 4 else Atyp.IPV6
    return bytes([atyp]) + ip.packed + port.to_bytes(2, "big")


def encode_reply(rep: Rep | int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    """``VER REP RSV ATYP BND.ADDR BND.PORT``; a failure binds 0.0.0.0:0 as Go's ``errorResponse``."""
    return bytes([VERSION, int(rep), 0]) + _encode_addr(host, port)


def _fail(rep: Rep) -> bytes:
    return encode_reply(rep)


class Socks5Server:
    """One client's handshake. ``username``/``password`` None: no authentication (method 00);
    else only method 02 with exactly these (compared in constant time)."""

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self._user = username.encode() if username is not None else None
        self._password = password.encode() if password is not None else None
        self._buf = bytearray()
        self._out = bytearray()
        self._state: Literal["greeting", "auth", "request", "answer", "done", "failed"] = "greeting"
        self.request: Socks5Request | None = None
        self.username: str | None = None

    @property
    def needs_auth(self) -> bool:
        return self._user is not None or self._password is not None

    @property
    def state(self) -> str:
        return self._state

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def receive(self, data: bytes) -> Socks5Request | None:
        """Feed bytes; the request once complete (then answer it with ``reply``), else None."""
        if self._state == "failed":
            raise Socks5Malformed("handshake already failed")
        if self._state in ("answer", "done"):
            raise Socks5Malformed("bytes after the request, before the reply")
        self._buf += data
        if len(self._buf) > MAX_HANDSHAKE:
            self._state = "failed"
            raise Socks5Malformed(f"{len(self._buf)} bytes before the request was complete")
        try:
            return self._advance()
        except Socks5Error:
            self._state = "failed"
            raise

    def _advance(self) -> Socks5Request | None:
        while True:
            if self._state == "greeting":
                if not self._greeting():
                    return None
            elif self._state == "auth":
                if not self._auth():
                    return None
            elif self._state == "request":
                return self._request()
            else:
                return None

    def _greeting(self) -> bool:
        buf = self._buf
        if len(buf) < 2:
            if buf and buf[0] != VERSION:
                raise Socks5Malformed(f"SOCKS version {buf[0]}", bytes([VERSION, NO_ACCEPTABLE]))
            return False
        if buf[0] != VERSION:
            raise Socks5Malformed(f"SOCKS version {buf[0]}", bytes([VERSION, NO_ACCEPTABLE]))
        n = buf[1]
        if n == 0:
            raise Socks5Malformed("no methods offered", bytes([VERSION, NO_ACCEPTABLE]))
        if len(buf) < 2 + n:
            return False
        methods = bytes(buf[2:2 + n])
        del buf[:2 + n]
        want = USER_PASS if self.needs_auth else NO_AUTH
        if want not in methods:
            raise Socks5NoMethod(f"methods {methods.hex()} lack {want:02x}", bytes([VERSION, NO_ACCEPTABLE]))
        self._out += bytes([VERSION, want])
        self._state = "auth" if self.needs_auth else "request"
        return True

    def _auth(self) -> bool:
        buf, failed = self._buf, bytes([AUTH_VERSION, 1])
        if not buf:
            return False
        if buf[0] != AUTH_VERSION:
            raise Socks5AuthFailed(f"auth version {buf[0]}", failed)
        if len(buf) < 2:
            return False
        ulen = buf[1]
        if len(buf) < 3 + ulen:
            return False
        plen = buf[2 + ulen]
        end = 3 + ulen + plen
        if len(buf) < end:
            return False
        user, password = bytes(buf[2:2 + ulen]), bytes(buf[3 + ulen:end])
        del buf[:end]
        # Both compared in full (constant time each), so timing tells nothing about which was wrong.
        ok_user = hmac.compare_digest(user, self._user or b"")
        ok_password = hmac.compare_digest(password, self._password or b"")
        if not (ok_user and ok_password) or ulen == 0:
            raise Socks5AuthFailed("wrong username or password", failed)
        self.username = user.decode("ascii", "replace")
        self._out += bytes([AUTH_VERSION, 0])
        self._state = "request"
        return True

    def _request(self) -> Socks5Request | None:
        buf = self._buf
        if len(buf) < 4:
            if buf and buf[0] != VERSION:
                raise Socks5Malformed(f"request version {buf[0]}", _fail(Rep.GENERAL_FAILURE))
            return None
        if buf[0] != VERSION or buf[2] != 0:
            raise Socks5Malformed("bad request header", _fail(Rep.GENERAL_FAILURE))
        try:
            parsed = _parse_addr(buf, 3)
        except Socks5Unsupported as e:
            raise Socks5Unsupported(str(e), _fail(Rep.ADDRESS_TYPE_NOT_SUPPORTED)) from None
        except Socks5Malformed as e:
            raise Socks5Malformed(str(e), _fail(Rep.GENERAL_FAILURE)) from None
        if parsed is None:
            return None
        atyp, host, port, end = parsed
        cmd = buf[1]
        del buf[:end]
        if cmd == CMD_CONNECT:
            command: Literal["connect", "udp_associate"] = "connect"
        elif cmd == CMD_UDP_ASSOCIATE:
            command = "udp_associate"
        else:
            raise Socks5Unsupported(f"command {cmd}", _fail(Rep.COMMAND_NOT_SUPPORTED))
        self.request = Socks5Request(command, host, port, atyp)
        self._state = "answer"
        return self.request

    def reply(self, rep: Rep | int, host: str = "0.0.0.0", port: int = 0) -> bytes:
        """The answer to the request (queued in ``data_to_send`` too); a failure ends the handshake."""
        if self._state != "answer":
            raise ProtocolError(f"no request to answer (state {self._state})")
        out = encode_reply(rep, host, port) if rep == Rep.SUCCEEDED else _fail(Rep(rep))
        self._state = "done" if rep == Rep.SUCCEEDED else "failed"
        self._out += out
        return out

    def trailing(self) -> bytes:
        """Bytes the client sent after its request (tunnel data sent early): the target's, once done."""
        out, self._buf = bytes(self._buf), bytearray()
        return out


def decode_udp(datagram: bytes) -> UdpDatagram:
    """``RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA``; fragments are refused (RFC 1928 allows a relay
    that does not reassemble to drop them)."""
    if len(datagram) < 4:
        raise Socks5Malformed(f"UDP header of {len(datagram)} bytes")
    if datagram[0] != 0 or datagram[1] != 0:
        raise Socks5Malformed("UDP header reserved bytes are not zero")
    if datagram[2] != 0:
        raise Socks5Unsupported(f"UDP fragment {datagram[2]}")
    parsed = _parse_addr(datagram, 3)
    if parsed is None:
        raise Socks5Malformed("UDP header truncated")
    atyp, host, port, end = parsed
    return UdpDatagram(host, port, datagram[end:], atyp)


def encode_udp(host: str, port: int, data: bytes) -> bytes:
    return b"\x00\x00\x00" + _encode_addr(host, port) + data


# -- socks5 client (23a) --
class Socks5Refused(Socks5Error, ProtocolError):
    """The proxy answered our request with a failure (``rep``: its RFC 1928 reply code)."""

    def __init__(self, message: str, rep: Rep | int) -> None:
        super().__init__(message)
        self.rep = rep


@dataclass(frozen=True)
class Socks5Bound:
    """The proxy's success reply: the address it connected from (``BND.ADDR``/``BND.PORT``)."""

    host: str
    port: int


class Socks5Client:
    """Our side of a CONNECT through a SOCKS5 proxy (the egress worker's upstream hop): the greeting
    is queued at once (``data_to_send``); feed the proxy's bytes to ``receive`` and write what it queues,
    until it returns the ``Socks5Bound`` (then ``trailing`` holds tunnel bytes that came with the reply).
    One message at a time, as RFC 1928 asks of a client that does not know the server's method choice.
    With credentials, methods 00 and 02 are offered (the server picks); a server that picks 02 gets
    them (RFC 1929). A refusal is a ``Socks5Refused`` with the proxy's REP; anything malformed a
    ``Socks5Malformed``; bounded: no message of ours waits for more than the largest legal reply."""

    def __init__(self, host: str, port: int, username: str | None = None,
                 password: str | None = None) -> None:
        self._request = bytes([VERSION, CMD_CONNECT, 0]) + _encode_addr(host, port)  # ValueError if bad
        if username is not None or password is not None:
            user, pw = (username or "").encode(), (password or "").encode()
            if not 0 < len(user) <= 255 or len(pw) > 255:
                raise ValueError("SOCKS5 username must be 1..255 bytes, password at most 255")
            self._auth: bytes | None = bytes([AUTH_VERSION, len(user)]) + user + bytes([len(pw)]) + pw
        else:
            self._auth = None
        methods = bytes([NO_AUTH, USER_PASS]) if self._auth is not None else bytes([NO_AUTH])
        self._out = bytearray(bytes([VERSION, len(methods)]) + methods)
        self._buf = bytearray()
        self._state: Literal["method", "auth", "reply", "done", "failed"] = "method"
        self.bound: Socks5Bound | None = None

    @property
    def state(self) -> str:
        return self._state

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def receive(self, data: bytes) -> Socks5Bound | None:
        """Feed the proxy's bytes (b"" at its EOF: ``Socks5Malformed``); the bound address once the
        CONNECT succeeded, else None (more bytes are needed, or ``data_to_send`` has our next message)."""
        if self._state == "failed":
            raise Socks5Malformed("handshake already failed")
        if self._state == "done":
            raise Socks5Malformed("handshake already done (tunnel bytes go to the tunnel)")
        if not data:
            was, self._state = self._state, "failed"
            raise Socks5Malformed(f"proxy closed the connection during the handshake (awaiting its {was})")
        self._buf += data
        try:
            return self._advance()
        except Socks5Error:
            self._state = "failed"
            raise

    def _advance(self) -> Socks5Bound | None:
        buf = self._buf
        if self._state == "method":
            if len(buf) < 2:
                return None
            if buf[0] != VERSION:
                raise Socks5Malformed(f"proxy speaks SOCKS version {buf[0]}")
            method = buf[1]
            del buf[:2]
            if method == NO_AUTH:
                self._state = "reply"
                self._out += self._request
            elif method == USER_PASS and self._auth is not None:
                self._state = "auth"
                self._out += self._auth
            elif method == NO_ACCEPTABLE:
                raise Socks5NoMethod("the proxy accepts none of our authentication methods")
            else:
                raise Socks5Malformed(f"proxy chose method {method:02x}, which we did not offer")
            if buf:
                raise Socks5Malformed("proxy sent bytes before our next message")
            return None
        if self._state == "auth":
            if len(buf) < 2:
                return None
            if buf[0] != AUTH_VERSION or buf[1] != 0:
                raise Socks5AuthFailed("the proxy refused our username/password")
            del buf[:2]
            if buf:
                raise Socks5Malformed("proxy sent bytes before our request")
            self._state = "reply"
            self._out += self._request
            return None
        # reply: VER REP RSV ATYP BND.ADDR BND.PORT
        if len(buf) < 4:
            if buf and buf[0] != VERSION:
                raise Socks5Malformed(f"reply version {buf[0]}")
            return None
        if buf[0] != VERSION or buf[2] != 0:
            raise Socks5Malformed("bad reply header")
        rep = buf[1]
        if rep != Rep.SUCCEEDED:
            raise Socks5Refused(f"proxy refused the CONNECT: REP {rep:02x}", rep)
        parsed = _parse_addr(buf, 3)
        if parsed is None:
            return None
        _, host, port, end = parsed
        del buf[:end]
        self._state = "done"
        self.bound = Socks5Bound(host, port)
        return self.bound

    def trailing(self) -> bytes:
        """Tunnel bytes that arrived with the proxy's reply (the target's first bytes)."""
        out, self._buf = bytes(self._buf), bytearray()
        return out


__all__ += ["Socks5Bound", "Socks5Client", "Socks5Refused"]
# -- end socks5 client (23a) --
