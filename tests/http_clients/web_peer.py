"""A small HTTP server for the client tests, served on a device's tailnet listener: HTTP/1.1 (h11) and
HTTP/2 (h2: over TLS when ALPN picks it, or in cleartext with prior knowledge), and what it saw
(connections, requests, concurrent streams) so tests can prove reuse and multiplexing from the
server's side. Plus a throwaway CA and server certificate made with ``cryptography``.

Routes: ``/hello``; ``/echo`` (the request body back); ``/bytes/N`` (N bytes of a pattern);
``/slow/S`` (answers after S seconds); ``/conn`` (``"<connection number> <peer ip>:<port>"``);
``/reset`` (no answer: the connection is reset, an RST to the client).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import h2.config
import h2.connection
import h2.events
import h11
from anyio.abc import ByteStream, TaskGroup
from anyio.streams.tls import TLSAttribute, TLSStream
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pytsnet import ActorDevice
from pytsnet.actors.netstack.splice import abort_flow
from pytsnet.net import TcpStream

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def pattern(n: int) -> bytes:
    """``n`` bytes that are not all alike (a truncated or reordered body does not compare equal)."""
    block = bytes(range(251))
    return (block * (n // len(block) + 1))[:n]


class _Reset(Exception):
    """A handler's way to have its connection reset."""


@dataclass
class Seen:
    connections: int = 0
    requests: list[tuple[int, str, str, int]] = field(default_factory=list)
    """(connection number, method, path, request body length) per request answered."""
    protocols: list[str] = field(default_factory=list)
    """Per connection: "http/1.1" or "h2"."""
    max_streams: dict[int, int] = field(default_factory=dict)
    """Per HTTP/2 connection: the most requests in flight at once."""
    open: dict[int, ByteStream] = field(default_factory=dict)


class WebPeer:
    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.seen = Seen()

    async def app(self, conn: int, peer: str, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        self.seen.requests.append((conn, method, path, len(body)))
        parts = path.split("/")
        if path == "/hello":
            return 200, b"hello from web"
        if path == "/echo":
            return 200, body
        if parts[1] == "bytes":
            return 200, pattern(int(parts[2]))
        if parts[1] == "slow":
            await anyio.sleep(float(parts[2]))
            return 200, b"slow"
        if path == "/conn":
            return 200, f"{conn} {peer}".encode()
        if path == "/reset":
            raise _Reset
        return 404, b"not found"

    async def kill_connections(self) -> None:
        """Close every open connection from the server's side, as a server's idle timeout would."""
        for stream in list(self.seen.open.values()):
            await stream.aclose()

    async def serve_connection(self, raw: TcpStream) -> None:
        self.seen.connections += 1
        conn = self.seen.connections
        peer = f"{raw.remote_address[0]}:{raw.remote_address[1]}"
        stream: ByteStream = raw
        try:
            if self.tls is not None:
                stream = await TLSStream.wrap(raw, server_side=True, ssl_context=self.tls,
                                              standard_compatible=False)
            self.seen.open[conn] = stream
            first = b"" if self.tls is not None else await stream.receive(65536)
            alpn_h2 = self.tls is not None and stream.extra(TLSAttribute.alpn_protocol, None) == "h2"
            prior_knowledge = bool(first) and H2_PREFACE.startswith(first[:len(H2_PREFACE)])
            if alpn_h2 or prior_knowledge:
                self.seen.protocols.append("h2")
                await self._h2(stream, conn, peer, first)
            else:
                self.seen.protocols.append("http/1.1")
                await self._h11(stream, conn, peer, first)
        except _Reset:
            abort_flow(raw._ch)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError,
                ssl.SSLError):
            pass  # the client went away (or a test killed the connection)
        finally:
            self.seen.open.pop(conn, None)
            await stream.aclose()

    async def _h11(self, stream: ByteStream, conn: int, peer: str, data: bytes) -> None:
        h = h11.Connection(h11.SERVER)
        if data:  # (h11 reads b"" as the peer's EOF)
            h.receive_data(data)
        req: h11.Request | None = None
        body = bytearray()
        while True:
            ev = h.next_event()
            if ev is h11.NEED_DATA:
                try:
                    h.receive_data(await stream.receive(65536))
                except anyio.EndOfStream:
                    h.receive_data(b"")
            elif isinstance(ev, h11.Request):
                req, body = ev, bytearray()
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                assert req is not None
                status, payload = await self.app(conn, peer, req.method.decode(), req.target.decode(),
                                                 bytes(body))
                head = h11.Response(status_code=status, headers=[("content-length", str(len(payload)))])
                await stream.send(h.send(head) or b"")
                await stream.send(h.send(h11.Data(data=payload)) or b"")
                await stream.send(h.send(h11.EndOfMessage()) or b"")
                if h.our_state is h11.MUST_CLOSE:
                    return
                h.start_next_cycle()
            else:  # ConnectionClosed, PAUSED
                return

    async def _h2(self, stream: ByteStream, conn: int, peer: str, data: bytes) -> None:
        h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        h.initiate_connection()
        lock = anyio.Lock()
        window = [anyio.Event()]
        requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        in_flight = [0]

        async def flush() -> None:
            async with lock:
                out = h.data_to_send()
                if out:
                    await stream.send(out)

        async def respond(tg: TaskGroup, sid: int, headers: dict[str, str], body: bytes) -> None:
            status, payload = await self.app(conn, peer, headers[":method"], headers[":path"], body)
            h.send_headers(sid, [(":status", str(status)), ("content-length", str(len(payload)))])
            view = memoryview(payload)
            while view:
                room = min(h.local_flow_control_window(sid), h.max_outbound_frame_size, len(view))
                if room <= 0:
                    updated = window[0]  # taken before the flush: an update during it is not missed
                    await flush()
                    await updated.wait()
                    continue
                h.send_data(sid, view[:room].tobytes())
                view = view[room:]
                await flush()
            h.end_stream(sid)
            await flush()
            in_flight[0] -= 1

        await flush()
        async with anyio.create_task_group() as tg:
            while True:
                if not data:
                    try:
                        data = await stream.receive(65536)
                    except anyio.EndOfStream:
                        tg.cancel_scope.cancel()
                        return
                events = h.receive_data(data)
                data = b""
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        requests[ev.stream_id] = ({str(k): str(v) for k, v in ev.headers or []}, bytearray())
                        in_flight[0] += 1
                        self.seen.max_streams[conn] = max(self.seen.max_streams.get(conn, 0), in_flight[0])
                    elif isinstance(ev, h2.events.DataReceived):
                        assert ev.stream_id is not None and ev.data is not None
                        requests[ev.stream_id][1].extend(ev.data)
                        h.acknowledge_received_data(ev.flow_controlled_length or 0, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        assert ev.stream_id is not None
                        hdrs, body = requests.pop(ev.stream_id)
                        tg.start_soon(respond, tg, ev.stream_id, hdrs, bytes(body))
                    elif isinstance(ev, h2.events.WindowUpdated):
                        window[0].set()
                        window[0] = anyio.Event()
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        tg.cancel_scope.cancel()
                        return
                await flush()


@asynccontextmanager
async def serving(dev: ActorDevice, port: int, tls: ssl.SSLContext | None = None) -> AsyncIterator[WebPeer]:
    """``WebPeer`` on ``dev``'s tailnet ``port`` until the block ends (connections then closed)."""
    peer = WebPeer(tls)
    lst = await dev.listen(port)
    try:
        async with anyio.create_task_group() as tg:
            async def accept_loop() -> None:
                while True:
                    tg.start_soon(peer.serve_connection, await lst.accept())

            tg.start_soon(accept_loop)
            yield peer
            tg.cancel_scope.cancel()
    finally:
        lst.close()


@dataclass
class Certs:
    ca_pem: bytes
    server: ssl.SSLContext

    def client_context(self) -> ssl.SSLContext:
        """What a client passes as ``verify=``: trusts our CA only."""
        return ssl.create_default_context(cadata=self.ca_pem.decode())


def make_certs(names: list[str], ips: list[str]) -> Certs:
    """A throwaway CA and a server certificate for ``names``/``ips``, served with ALPN h2 and http/1.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pytsnet test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[Any] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    leaf = (x509.CertificateBuilder().subject_name(leaf_name)
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.set_alpn_protocols(["h2", "http/1.1"])
    with tempfile.NamedTemporaryFile() as cert_file, tempfile.NamedTemporaryFile() as key_file:
        cert_file.write(leaf.public_bytes(serialization.Encoding.PEM))
        key_file.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        cert_file.flush()
        key_file.flush()
        server.load_cert_chain(cert_file.name, key_file.name)
    return Certs(ca.public_bytes(serialization.Encoding.PEM), server)
