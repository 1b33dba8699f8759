"""A minimal asyncio ts2021 client for tests and benchmarks of the local control server.

It does what a Go node does on the wire (``GET /key``, the ``/ts2021`` upgrade, HTTP/2 requests
as concurrent streams, map frames) without any node logic. Not the node's real control client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import zstandard

from pytsnet.wire.controlbase.handshake import ClientHandshake
from pytsnet.wire.controlbase.stream import ClientStream
from pytsnet.wire.http1_upgrade import Http1Error, UpgradeClient
from pytsnet.wire.keys import DiscoPrivate, MachinePrivate, MachinePublic, NodePrivate

CAPVER = 130
JSON = dict[str, Any]


async def fetch_key(url: str) -> MachinePublic:
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    writer.write(f"GET /key?v={CAPVER} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    body = data.split(b"\r\n\r\n", 1)[1]
    return MachinePublic.from_text(json.loads(body)["publicKey"])


class _Stream:
    def __init__(self) -> None:
        self.status = 0
        self.data = asyncio.Queue[bytes | None]()
        self.reset_code: int | None = None
        """The error code of the server's RST_STREAM, if it reset the stream."""


class ControlClient:
    """One Noise connection with HTTP/2 on top; ``post`` and ``map_stream`` may run concurrently."""

    def __init__(self, url: str, machine: MachinePrivate | None = None) -> None:
        self.url = url
        self.machine = machine or MachinePrivate.generate()
        self.node = NodePrivate.generate()
        self.disco = DiscoPrivate.generate()
        self._streams: dict[int, _Stream] = {}
        self.goaway_code: int | None = None
        """The error code of the server's GOAWAY, once one arrived."""
        self.closed = asyncio.Event()
        """Set when the server closed the connection (or it broke)."""
        self.settings_received = asyncio.Event()
        """Set once the server's SETTINGS arrived (``h2.remote_settings`` then holds them)."""

    @classmethod
    async def connected(cls, url: str, server_key: MachinePublic | None = None) -> ControlClient:
        """A client with its Noise session open (a fresh machine key)."""
        c = cls(url)
        await c.connect(server_key)
        return c

    async def connect(self, server_key: MachinePublic | None = None) -> None:
        """Open the Noise session (``server_key``: control's key if already fetched, saving a GET)."""
        u = urlsplit(self.url)
        server_key = server_key or await fetch_key(self.url)
        hs = ClientHandshake(self.machine, server_key, CAPVER)
        self.reader, self.writer = await asyncio.open_connection(u.hostname, u.port)
        up = UpgradeClient("POST", "/ts2021", u.netloc, "tailscale-control-protocol",
                           [("X-Tailscale-Handshake", base64.b64encode(hs.initiation).decode())])
        self.writer.write(up.request())
        try:  # the head only: what follows it stays in the reader for the Noise loop
            up.receive_data(await self.reader.readuntil(b"\r\n\r\n"))
        except BaseException as e:
            self.writer.close()  # no pump owns it yet
            if isinstance(e, Http1Error):
                raise ConnectionError(str(e)) from e
            raise
        self.noise = ClientStream(hs)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                       header_encoding="utf-8"))
        self.h2.initiate_connection()
        self._pump = asyncio.ensure_future(self._read_loop())
        await self._flush()

    async def _flush(self) -> None:
        if not self.noise.established:  # h2 keeps its output until the handshake response arrived
            return
        data = self.h2.data_to_send()
        if data:
            self.writer.write(self.noise.send(data))
            await self.writer.drain()

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                was = self.noise.established
                plain = self.noise.receive_data(data)
                if not was and self.noise.established:
                    await self._flush()
                if not plain:
                    continue
                for ev in self.h2.receive_data(plain):
                    st = self._streams.get(getattr(ev, "stream_id", -1))
                    if isinstance(ev, h2.events.ResponseReceived) and st:
                        st.status = int(cast("dict[str, str]", dict(ev.headers))[":status"])  # utf-8 headers
                    elif isinstance(ev, h2.events.DataReceived) and st:
                        self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        st.data.put_nowait(ev.data)
                    elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset) and st:
                        if isinstance(ev, h2.events.StreamReset):
                            st.reset_code = int(ev.error_code or 0)
                        st.data.put_nowait(None)
                    elif isinstance(ev, h2.events.RemoteSettingsChanged):
                        self.settings_received.set()
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        self.goaway_code = int(ev.error_code or 0)
                await self._flush()
        finally:
            # the pump owns the connection: when it ends (the server closed it, or asyncio.run
            # cancels it as a test's loop ends) the transport closes while its loop still runs
            self.writer.close()
            self.closed.set()
            for st in self._streams.values():
                st.data.put_nowait(None)

    async def _request(self, path: str, body: JSON, method: str = "POST") -> _Stream:
        sid = self.h2.get_next_available_stream_id()
        st = self._streams[sid] = _Stream()
        u = urlsplit(self.url)
        payload = json.dumps(body).encode()
        self.h2.send_headers(sid, [(":method", method), (":scheme", "https"), (":authority", u.netloc),
                                   (":path", path)])
        self.h2.send_data(sid, payload, end_stream=True)
        await self._flush()
        return st

    async def open_partial(self, path: str, size: int) -> tuple[int, int]:
        """Open a request stream and send up to ``size`` body bytes, as much as the flow-control
        windows allow right now, without ending it: ``(stream id, bytes sent)``."""
        sid = self.h2.get_next_available_stream_id()
        self._streams[sid] = _Stream()
        self.h2.send_headers(sid, [(":method", "POST"), (":scheme", "https"),
                                   (":authority", urlsplit(self.url).netloc), (":path", path)])
        sent = 0
        while sent < size:
            n = min(size - sent, self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if n <= 0:
                break
            self.h2.send_data(sid, b"x" * n)
            sent += n
        await self._flush()
        return sid, sent

    def stream(self, sid: int) -> _Stream:
        return self._streams[sid]

    async def reset(self, sid: int) -> None:
        self.h2.reset_stream(sid)
        await self._flush()

    async def post(self, path: str, body: JSON, *, method: str = "POST") -> tuple[int, bytes]:
        """``method``: GET for the ``/machine/tka/*`` calls, which Go sends as GET with a JSON body."""
        st = await self._request(path, body, method)
        out = bytearray()
        while (chunk := await st.data.get()) is not None:
            out += chunk
        return st.status, bytes(out)

    async def register(self, authkey: str = "", *, hostname: str = "pynode", followup: str = "",
                       ephemeral: bool = False, expiry: str = "0001-01-01T00:00:00Z",
                       old_node_key: str | None = None, hostinfo: JSON | None = None) -> JSON:
        """``hostinfo``: extra Hostinfo fields (e.g. ``RoutableIPs``) next to ``Hostname``."""
        req: JSON = {"Version": CAPVER, "NodeKey": self.node.public().to_text(), "Expiry": expiry,
                     "Hostinfo": {"Hostname": hostname, **(hostinfo or {})}, "Followup": followup}
        if authkey:
            req["Auth"] = {"AuthKey": authkey}
        if ephemeral:
            req["Ephemeral"] = True
        if old_node_key:
            req["OldNodeKey"] = old_node_key
        status, body = await self.post("/machine/register", req)
        if status != 200:
            raise ConnectionError(f"register: HTTP {status}: {body!r}")
        return dict(json.loads(body))

    def map_request(self, **extra: Any) -> JSON:
        return {"Version": CAPVER, "Compress": "zstd", "KeepAlive": True,
                "NodeKey": self.node.public().to_text(),
                "DiscoKey": self.disco.public().to_text(), "Hostinfo": {"Hostname": "pynode"}, **extra}

    async def lite_update(self, **extra: Any) -> int:
        """A non-streaming ``OmitPeers`` map request (how Go pushes Hostinfo/endpoint changes)."""
        status, _ = await self.post("/machine/map", self.map_request(Stream=False, OmitPeers=True, **extra))
        return status

    async def map_stream(self, **extra: Any) -> AsyncIterator[JSON]:
        """Yield decoded MapResponses of a long poll (keep-alives included)."""
        st = await self._request("/machine/map", self.map_request(Stream=True, **extra))
        buf = bytearray()
        dctx = zstandard.ZstdDecompressor()
        while (chunk := await st.data.get()) is not None:
            buf += chunk
            while len(buf) >= 4:
                (n,) = struct.unpack_from("<I", buf)
                if len(buf) < 4 + n:
                    break
                frame = bytes(buf[4:4 + n])
                del buf[:4 + n]
                yield json.loads(dctx.decompressobj().decompress(frame))
        if st.status != 200:
            raise ConnectionError(f"map: HTTP {st.status}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self._pump.cancel()
