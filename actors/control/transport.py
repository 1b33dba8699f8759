"""Blocking ts2021 client: ``GET /key``, the ``/ts2021`` upgrade, Noise, then HTTP/2 requests.

Follows control.md §1-5 (Go's ``controlhttp``/``ts2021``), not any particular server: the Noise
initiation rides in ``X-Tailscale-Handshake`` (std base64), the reply must be ``101`` with
``Upgrade: tailscale-control-protocol``, an optional early payload precedes HTTP/2 with prior
knowledge, ``:scheme`` is ``https`` and ``:authority`` the control URL's ``host[:port]``. One reader
thread demultiplexes h2 streams, so a long poll, lite updates and a logout share one connection as
Go's client does. ``https://`` URLs are dialled with TLS on their port (443 by default); the Go
client's port-80-first race is not implemented.
"""

from __future__ import annotations

import base64
import contextlib
import queue
import socket
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from pytsnet.actors.runtime import logs
from pytsnet.wire.controlbase import ClientHandshake, ClientStream, ServerErrorMessage
from pytsnet.wire.errors import WireError
from pytsnet.wire.http1_upgrade import UpgradeClient
from pytsnet.wire.keys import MachinePrivate, MachinePublic
from pytsnet.wire.tailcfg import CURRENT_CAPABILITY_VERSION, OverTLSPublicKeyResponse

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ControlTransportError", "ControlURLError", "Noise2Client", "Response", "fetch_server_key",
           "parse_control_url"]

UPGRADE_HEADER_VALUE = "tailscale-control-protocol"
HANDSHAKE_HEADER_NAME = "X-Tailscale-Handshake"
MAX_KEY_RESPONSE = 64 << 10
MAX_HTTP_HEAD = 16 << 10

log = logs.subsystem_logger("control")


class ControlTransportError(ConnectionError):
    """The control server could not be reached or broke the protocol; the caller retries."""


class ControlURLError(ControlTransportError, ValueError):
    """The control URL cannot work (no or bad scheme, no host, bad port): retrying will not help."""


def parse_control_url(url: str) -> tuple[str, int, bool, str]:
    """``(host, port, tls, authority)`` of a control URL, or ``ControlURLError`` saying what is wrong."""
    u = urlsplit(url)
    if not u.scheme or (not u.netloc and u.scheme not in ("http", "https")):
        raise ControlURLError(f"control URL {url!r} has no scheme: use http://{url} or https://{url}")
    if u.scheme not in ("http", "https"):
        raise ControlURLError(f"control URL {url!r}: scheme must be http or https, not {u.scheme!r}")
    if not u.hostname:
        raise ControlURLError(f"control URL {url!r} has no host")
    try:
        port = u.port
    except ValueError as e:
        raise ControlURLError(f"control URL {url!r}: bad port ({e})") from None
    tls = u.scheme == "https"
    return u.hostname, port or (443 if tls else 80), tls, u.netloc


def fetch_server_key(url: str, timeout: float, version: int = CURRENT_CAPABILITY_VERSION) -> MachinePublic:
    """``GET /key?v=N`` → the server's Noise public key (``publicKey``); a zero key is "too old"."""
    parse_control_url(url)
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/key?v={version}", timeout=timeout) as r:
            if r.status != 200:
                raise ControlTransportError(f"/key: HTTP {r.status}")
            body = r.read(MAX_KEY_RESPONSE)
    except (OSError, urllib.error.URLError) as e:
        raise ControlTransportError(f"/key: {e}") from e
    try:
        keys = OverTLSPublicKeyResponse.from_json(body)
    except WireError as e:
        raise ControlTransportError("control server is too old; no noise key") from e
    if keys.PublicKey is None or keys.PublicKey.is_zero():
        raise ControlTransportError("control server is too old; no noise key")
    return keys.PublicKey


@dataclass
class Response:
    """One h2 stream's answer; ``chunks`` yields body bytes and finally ``None`` (end or failure)."""

    stream_id: int
    headers: threading.Event = field(default_factory=threading.Event)
    status: int = 0
    chunks: queue.Queue[bytes | None] = field(default_factory=queue.Queue)
    error: str = ""
    on_headers: Callable[[], None] | None = None
    """Called (on the connection's reader thread) once ``headers`` is set: lets one thread wait for
    many held responses on a queue of its own instead of polling their events."""

    def mark_headers(self) -> None:
        """The status is known (or the stream failed): wake ``wait_status`` and the hook."""
        self.headers.set()
        hook = self.on_headers
        if hook is not None:
            hook()

    def read_chunk(self, timeout: float) -> bytes | None:
        """Next body bytes, ``None`` at the end; raises ``ControlTransportError`` on silence or failure."""
        try:
            chunk = self.chunks.get(timeout=timeout)
        except queue.Empty:
            raise ControlTransportError(f"no data from control for {timeout}s") from None
        if chunk is None and self.error:
            raise ControlTransportError(self.error)
        return chunk

    def read_all(self, timeout: float, limit: int = 1 << 20) -> bytes:
        out = bytearray()
        while (chunk := self.read_chunk(timeout)) is not None:
            out += chunk
            if len(out) > limit:
                raise ControlTransportError(f"response over {limit} bytes")
        return bytes(out)

    def wait_status(self, timeout: float) -> int:
        if not self.headers.wait(timeout):
            raise ControlTransportError(f"no response headers within {timeout}s")
        if self.error and not self.status:
            raise ControlTransportError(self.error)
        return self.status


class Noise2Client:
    """One Noise connection carrying HTTP/2; thread-safe ``request``; ``close`` unblocks every reader."""

    def __init__(self, url: str, machine: MachinePrivate, server_key: MachinePublic, *,
                 timeout: float = 10.0, version: int = CURRENT_CAPABILITY_VERSION) -> None:
        self.url = url
        host, port, tls, self.authority = parse_control_url(url)
        self._lock = threading.RLock()
        self._streams: dict[int, Response] = {}
        self._closed = False
        self.closed_reason = ""
        hs = ClientHandshake(machine, server_key, version)
        try:
            raw = socket.create_connection((host, port), timeout=timeout)
            self._sock: socket.socket = (ssl.create_default_context().wrap_socket(raw, server_hostname=host)
                                         if tls else raw)
            rest = self._upgrade(base64.b64encode(hs.initiation).decode())
            self._noise = ClientStream(hs)
            self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(
                client_side=True, header_encoding="utf-8"))
            self._h2.initiate_connection()
            plain = self._noise.receive_data(rest)
            while not self._noise.established:
                data = self._sock.recv(65536)
                if not data:
                    raise ControlTransportError("control closed the connection during the handshake")
                plain += self._noise.receive_data(data)
            self._sock.settimeout(None)
            self._flush()
            if plain:
                self._on_plaintext(plain)
        except ServerErrorMessage as e:
            self._abort()
            raise ControlTransportError(f"control refused the handshake: {e}") from e
        except (OSError, WireError, h2.exceptions.ProtocolError) as e:
            self._abort()
            raise ControlTransportError(f"ts2021 connect to {url}: {e}") from e
        log.debug("ts2021 connected to %s:%d (tls=%s)", host, port, tls)
        self._route = logs.current()
        self._reader = threading.Thread(target=self._read_loop, name="ts2021-reader", daemon=True)
        self._reader.start()

    def _upgrade(self, handshake_b64: str) -> bytes:
        """``POST /ts2021`` with the Noise initiation; the bytes after the ``101`` head (early payload)."""
        up = UpgradeClient("POST", "/ts2021", self.authority, UPGRADE_HEADER_VALUE,
                           [(HANDSHAKE_HEADER_NAME, handshake_b64)], max_head=MAX_HTTP_HEAD)
        self._sock.sendall(up.request())
        while True:
            data = self._sock.recv(4096)
            if not data:
                raise ControlTransportError("control closed the connection before answering the upgrade")
            reply = up.receive_data(data)
            if reply is not None:
                break
        if reply.headers.get("upgrade", "").lower() != UPGRADE_HEADER_VALUE:
            raise ControlTransportError(f"unexpected Upgrade header {reply.headers.get('upgrade')!r}")
        return reply.leftover

    # -- requests ----------------------------------------------------------------------------------
    def request(self, path: str, body: bytes, method: str = "POST", authority: str | None = None) -> Response:
        """Open a stream (``register``/``map``: no Content-Type, as ``direct.go`` sends them).
        ``authority`` overrides ``:authority`` (Go's TKA calls name ``https://unused/...``)."""
        with self._lock:
            if self._closed:
                raise ControlTransportError(self.closed_reason or "connection closed")
            try:
                sid = self._h2.get_next_available_stream_id()
                resp = self._streams[sid] = Response(sid)
                self._h2.send_headers(sid, [(":method", method), (":scheme", "https"),
                                            (":authority", authority or self.authority), (":path", path)])
                step = self._h2.max_outbound_frame_size
                for i in range(0, len(body), step):
                    self._h2.send_data(sid, body[i:i + step])
                self._h2.end_stream(sid)
                self._flush()
            except (OSError, h2.exceptions.H2Error) as e:
                self._fail(f"send {path}: {e}")
                raise ControlTransportError(f"send {path}: {e}") from e
        return resp

    def post_json(self, path: str, obj: bytes, timeout: float) -> tuple[int, bytes]:
        resp = self.request(path, obj)
        status = resp.wait_status(timeout)
        return status, resp.read_all(timeout)

    def cancel(self, resp: Response) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._h2.reset_stream(resp.stream_id)
                self._flush()
            except (OSError, h2.exceptions.H2Error):
                pass

    # -- plumbing ----------------------------------------------------------------------------------
    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data:
            self._sock.sendall(self._noise.send(data))

    def _read_loop(self) -> None:
        logs.enter(self._route)
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    self._fail("control closed the connection")
                    return
                with self._lock:
                    plain = self._noise.receive_data(data)
                    if plain:
                        self._on_plaintext(plain)
        except (OSError, WireError, h2.exceptions.H2Error) as e:
            self._fail(f"connection lost: {e}")

    def _on_plaintext(self, plain: bytes) -> None:
        with self._lock:
            for ev in self._h2.receive_data(plain):
                st = self._streams.get(getattr(ev, "stream_id", 0) or -1)
                if isinstance(ev, h2.events.ResponseReceived) and st is not None:
                    hdrs = cast("dict[str, str]", dict(ev.headers))  # header_encoding="utf-8": str, not bytes
                    st.status = int(str(hdrs.get(":status", "0")))
                    st.mark_headers()
                elif isinstance(ev, h2.events.DataReceived):
                    self._h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    if st is not None:
                        st.chunks.put(ev.data)
                elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset) and st is not None:
                    if isinstance(ev, h2.events.StreamReset):
                        st.error = f"stream reset by control (code {ev.error_code})"
                    st.mark_headers()
                    st.chunks.put(None)
                    self._streams.pop(st.stream_id, None)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self._fail(f"control sent GOAWAY (code {ev.error_code})")
            self._flush()

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.closed_reason = reason
            streams, self._streams = list(self._streams.values()), {}
        log.debug("ts2021 connection to %s closed: %s", self.authority, reason)
        for st in streams:
            st.error = st.error or reason
            st.mark_headers()
            st.chunks.put(None)
        self._abort()

    def _abort(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._fail("closed by the node")

