"""The peerAPI's HTTP/1.1 and DoH framing, sans-IO (Go ``ipn/ipnlocal/peerapi.go``).

``PeerApiHttp`` is one server connection on h11 with keep-alive: bytes in, complete bounded requests
out, responses to bytes. ``route`` turns a request into a response, given who asked and a DNS
callback; it holds Go's rules: a ``Referer``/``Origin`` or a ``Host`` that is not one of our
addresses is 403 (a browser tricked into calling us), ``/dns-query`` is DoH (RFC 8484: GET with
``?dns=`` base64url, POST ``application/dns-message``) for callers the node allows, anything else
404. The actor owns the connection, the clock and the resolver; nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import h11

from pytsnet.wire.errors import ParseError

__all__ = ["DNS_MESSAGE", "INGRESS_PATH", "MAX_BODY", "MAX_HEAD", "MAX_QUERY", "BadIngressRequest",
           "BadPeerApiRequest", "IngressRequest", "PeerApiHttp", "PeerApiRequest", "PeerApiResponse",
           "dns_query_of", "host_allowed", "ingress_request", "route"]

MAX_HEAD = 8 * 1024
"""A request line and headers past this are refused (Go's clients send a few hundred bytes)."""
MAX_BODY = 64 * 1024
"""A request body past this is refused: a DNS message is at most 65535 bytes (RFC 1035 over TCP)."""
MAX_QUERY = 65535
"""The largest DNS query accepted, after decoding (Go allows 256 KiB; no DNS message is larger than this)."""
DNS_MESSAGE = "application/dns-message"


class BadPeerApiRequest(ParseError):
    """Not a usable HTTP/1.1 request (malformed, head or body over its bound): answer 400 and close."""


@dataclass
class PeerApiRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


@dataclass(frozen=True)
class PeerApiResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    extra: tuple[tuple[str, str], ...] = field(default=())


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw:
        k, v = name.decode("latin-1").lower(), value.decode("latin-1")
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


class PeerApiHttp:
    """One server-side HTTP/1.1 connection: ``receive`` bytes → complete requests, ``respond`` → bytes.

    Requests are answered in order (pipelined ones wait in h11's buffer); bodies must carry a
    ``Content-Length`` or be chunked, and are capped at ``max_body`` as they arrive."""

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY,
                 stream: Callable[[PeerApiRequest], bool] | None = None) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._max_body = max_body
        self._req: PeerApiRequest | None = None
        self._body = bytearray()
        self._stream = stream
        """22a: requests whose body is streamed (``body_chunk``) rather than buffered (Taildrop's PUT)."""
        self.streaming = False

    @property
    def closed(self) -> bool:
        """The connection is done (the client closed, or a response said so)."""
        return self._h11.our_state in (h11.MUST_CLOSE, h11.CLOSED) or self._h11.their_state is h11.CLOSED

    @property
    def partial(self) -> bool:
        """Part of a request is here and the rest is not (a head or body still arriving)."""
        return self._h11.their_state is h11.SEND_BODY or bool(self._h11.trailing_data[0])

    def receive(self, data: bytes) -> PeerApiRequest | None:
        """Feed bytes (``b""`` is end of stream); the next complete request, or None while more is needed
        (a pipelined request waits until the one before it was answered: ``next`` then gives it)."""
        self._h11.receive_data(data)
        return self.next()

    def next(self) -> PeerApiRequest | None:
        """The next complete request already buffered, or None."""
        if self.closed:
            return None
        while True:
            try:
                ev = self._h11.next_event()
            except h11.RemoteProtocolError as e:
                raise BadPeerApiRequest(f"malformed request: {e}") from None
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                return None
            if isinstance(ev, h11.Request):
                self._req = PeerApiRequest(method=ev.method.decode("latin-1"),
                                           target=ev.target.decode("latin-1"), headers=_headers(ev.headers))
                self._body.clear()
                if self._stream is not None and self._stream(self._req):
                    req, self._req = self._req, None
                    self.streaming = True
                    return req  # the body follows through body_chunk
                length = self._req.headers.get("content-length")
                if length is not None and int(length) > self._max_body:
                    raise BadPeerApiRequest(f"body of {length} bytes over {self._max_body}")
            elif isinstance(ev, h11.Data):
                self._body += ev.data
                if len(self._body) > self._max_body:
                    raise BadPeerApiRequest(f"body over {self._max_body} bytes")
            elif isinstance(ev, h11.EndOfMessage) and self._req is not None:
                req, self._req = self._req, None
                req.body = bytes(self._body)
                return req
            elif isinstance(ev, h11.ConnectionClosed):
                if self._req is not None or self._h11.their_state is not h11.CLOSED:
                    raise BadPeerApiRequest("truncated request")
                return None
            else:
                raise BadPeerApiRequest(f"unexpected {type(ev).__name__}")

    def feed(self, data: bytes) -> None:
        """Feed bytes (``b""``: end of stream) without parsing (``next``/``body_chunk`` then)."""
        self._h11.receive_data(data)

    def body_chunk(self) -> bytes | None:
        """22a: the next piece of a streamed body; ``b""`` at its end (then a response is due), None while
        more is needed. ``BadPeerApiRequest`` when the client closed before the end."""
        while True:
            try:
                ev = self._h11.next_event()
            except h11.RemoteProtocolError as e:
                raise BadPeerApiRequest(f"malformed body: {e}") from None
            if ev is h11.NEED_DATA:
                return None
            if isinstance(ev, h11.Data):
                if ev.data:
                    return bytes(ev.data)
                continue
            if isinstance(ev, h11.EndOfMessage):
                self.streaming = False
                return b""
            raise BadPeerApiRequest("truncated request")

    def respond(self, resp: PeerApiResponse, *, close: bool = False) -> bytes:
        """The response's bytes; then the connection is ready for the next request (unless closing)."""
        headers = [("Content-Type", resp.content_type), ("Content-Length", str(len(resp.body))),
                   *resp.extra]
        if close:
            headers.append(("Connection", "close"))
        out = self._h11.send(h11.Response(status_code=resp.status, headers=headers)) or b""
        if resp.body:
            out += self._h11.send(h11.Data(data=resp.body)) or b""
        out += self._h11.send(h11.EndOfMessage()) or b""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        return out

    def hijack(self) -> bytes:
        """Take the connection over after the request just returned (Go's ``Hijacker``): the bytes
        already received past it, which belong to the new owner; nothing more is parsed here."""
        data, _ = self._h11.trailing_data
        return bytes(data)

    def error_bytes(self, status: int, text: str) -> bytes:
        """A final response for a request h11 could not parse (best effort: b"" if h11 cannot send one)."""
        try:
            return self.respond(PeerApiResponse(status, text.encode() + b"\n"), close=True)
        except h11.LocalProtocolError:
            return b""


def dns_query_of(req: PeerApiRequest) -> bytes | str:
    """The DNS query a DoH request carries (RFC 8484 §4.1), or the public error text (Go ``dohQuery``)."""
    if req.method == "GET":
        values = parse_qs(urlsplit(req.target).query).get("dns", [])
        if not values or not values[0]:
            return "missing 'dns' parameter; try '?dns=' (DoH standard)"
        q64 = values[0]
        if len(q64) * 3 // 4 > MAX_QUERY:
            return "query too large"
        try:  # base64url without padding (RFC 8484 §4.1), as Go's RawURLEncoding
            q = base64.urlsafe_b64decode(q64 + "=" * (-len(q64) % 4))
        except (binascii.Error, ValueError):
            return "invalid 'dns' base64 encoding"
        if "=" in q64 or not q64.replace("-", "").replace("_", "").isalnum():
            return "invalid 'dns' base64 encoding"
        return q
    if req.method == "POST":
        if req.headers.get("content-type", "") != DNS_MESSAGE:
            return "unexpected Content-Type"
        if len(req.body) > MAX_QUERY:
            return "query too large"
        return req.body
    return "bad HTTP method"


def host_allowed(req: PeerApiRequest, ours: tuple[str, ...]) -> bool:
    """Go ``validatePeerAPIRequest``: no ``Referer``/``Origin``, and a ``Host`` that is ``peer`` or one
    of our addresses with a port (else 403 whatever the path)."""
    return not (req.headers.get("referer") or req.headers.get("origin")) and \
        _host_ok(req.headers.get("host", ""), ours)


def _host_ok(host: str, ours: tuple[str, ...]) -> bool:
    """Go ``validateHost``: ``peer``, or one of our addresses with a port."""
    if host == "peer":
        return True
    addr, sep, port = host.rpartition(":")
    if not sep or not port.isdigit():
        return False
    bracketed = addr.startswith("[") and addr.endswith("]")
    try:
        ip = ipaddress.ip_address(addr[1:-1] if bracketed else addr)
    except ValueError:
        return False
    if bracketed != (ip.version == 6):  # Go's ParseAddrPort: [v6]:port and v4:port only
        return False
    return any(ip == ipaddress.ip_address(a) for a in ours)


def route(req: PeerApiRequest, *, our_addresses: tuple[str, ...], dns_allowed: bool,
          resolve: Callable[[bytes], bytes | None]) -> PeerApiResponse:
    """Answer one request from an identified tailnet peer. ``dns_allowed``: the node lets this peer use
    its resolver (Go ``replyToDNSQueries``); ``resolve`` answers a DNS query, None when it could not."""
    if not host_allowed(req, our_addresses):
        return PeerApiResponse(403, b"invalid peerapi request\n")
    if req.path.startswith("/dns-query"):
        if not dns_allowed:
            return PeerApiResponse(403, b"DNS access denied\n")
        q = dns_query_of(req)
        if isinstance(q, str):
            return PeerApiResponse(400, q.encode() + b"\n")
        answer = resolve(q)
        if answer is None:
            return PeerApiResponse(500, b"DNS forwarding error\n")
        return PeerApiResponse(200, answer, DNS_MESSAGE)
    return PeerApiResponse(404, b"unsupported peerapi path\n")



# -- Funnel ingress --------------------------------------------------------------------------
INGRESS_PATH = "/v0/ingress"
"""Go ``handleServeIngress``: an ingress node hands us one public TCP connection (Funnel)."""


class BadIngressRequest(ParseError):
    """An ``/v0/ingress`` request we refuse: ``status`` and Go's public text are the answer."""

    def __init__(self, status: int, public: str) -> None:
        super().__init__(public)
        self.status = status
        self.public = public

    def response(self) -> PeerApiResponse:
        return PeerApiResponse(self.status, self.public.encode() + b"\n")


@dataclass(frozen=True)
class IngressRequest:
    """A well-formed ingress request: the public client (``Tailscale-Ingress-Src``) and what it asked
    for (``Tailscale-Ingress-Target``, ``host:port`` as the client's SNI and port)."""

    src: tuple[str, int]
    target_host: str
    target_port: int

    @property
    def target(self) -> str:
        host = f"[{self.target_host}]" if ":" in self.target_host else self.target_host
        return f"{host}:{self.target_port}"


def _addr_port(text: str) -> tuple[str, int] | None:
    """Go ``netip.ParseAddrPort``: ``1.2.3.4:80`` or ``[::1]:80``, nothing else."""
    addr, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        return None
    bracketed = addr.startswith("[") and addr.endswith("]")
    try:
        ip = ipaddress.ip_address(addr[1:-1] if bracketed else addr)
    except ValueError:
        return None
    if bracketed != (ip.version == 6):
        return None
    return str(ip), int(port)


def _split_host_port(text: str) -> tuple[str, int] | None:
    """Go ``net.SplitHostPort`` plus the 16-bit port parse ``HandleIngressTCPConn`` does next."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            return None
        host, port = text[1:end], text[end + 2:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            return None
    if not port.isdigit() or len(port) > 5 or int(port) > 65535 or "[" in host or "]" in host:
        return None
    return host, int(port)


def ingress_request(req: PeerApiRequest) -> IngressRequest:
    """Go ``handleServeIngress``'s checks after the caller's capability: POST only (405), both
    headers present and well-formed (400 with Go's text); ``BadIngressRequest`` otherwise."""
    if req.method != "POST":
        raise BadIngressRequest(405, "only POST allowed")
    src_text = req.headers.get("tailscale-ingress-src", "")
    if not src_text:
        raise BadIngressRequest(400, "Tailscale-Ingress-Src header not set")
    src = _addr_port(src_text)
    if src is None:
        raise BadIngressRequest(400, "Tailscale-Ingress-Src header invalid; want ip:port")
    target = req.headers.get("tailscale-ingress-target", "")
    if not target:
        raise BadIngressRequest(400, "Tailscale-Ingress-Target header not set")
    hp = _split_host_port(target)
    if hp is None:
        raise BadIngressRequest(400, "Tailscale-Ingress-Target header invalid; want host:port")
    return IngressRequest(src=src, target_host=hp[0], target_port=hp[1])
