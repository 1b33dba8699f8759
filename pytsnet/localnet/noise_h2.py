"""HTTP/2 (prior knowledge) served over one ts2021 Noise connection, with concurrent streams.

The Go client runs register, the map long-poll and lite map updates as parallel streams on one
Noise connection (``MaxConnsPerHost: 1``), so each request gets its own task; responses respect
HTTP/2 flow control, and a stream reset by the client cancels its task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from pytsnet.wire.controlbase.stream import ServerStream
from pytsnet.wire.errors import WireError

log = logging.getLogger(__name__)
MAX_REQUEST_BODY = 1 << 20
READ_SIZE = 65536


class StreamClosed(Exception):
    """The client reset the stream or the connection went away."""


@dataclass
class H2Request:
    stream_id: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)


Handler = Callable[["H2Request", "H2Response"], Awaitable[None]]


class H2Response:
    """Write side of one stream: ``start`` once, ``write`` any number of times, then ``end``."""

    def __init__(self, session: NoiseH2Session, stream_id: int) -> None:
        self._s = session
        self.stream_id = stream_id
        self.started = False
        self.ended = False

    async def start(self, status: int, headers: dict[str, str] | None = None) -> None:
        hdrs = [(":status", str(status)), *((k.lower(), v) for k, v in (headers or {}).items())]
        self._s.check_open(self.stream_id)
        self._s.h2.send_headers(self.stream_id, hdrs)
        self.started = True
        await self._s.flush()

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._s.check_open(self.stream_id)
            window = min(self._s.h2.local_flow_control_window(self.stream_id),
                         self._s.h2.max_outbound_frame_size)
            if window <= 0:
                await self._s.wait_window()
                continue
            self._s.h2.send_data(self.stream_id, bytes(view[:window]))
            view = view[window:]
            await self._s.flush()

    async def end(self, data: bytes = b"") -> None:
        if data:
            await self.write(data)
        self._s.check_open(self.stream_id)
        self._s.h2.end_stream(self.stream_id)
        self.ended = True
        await self._s.flush()

    async def simple(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        await self.start(status, {"content-type": content_type, "content-length": str(len(body))})
        await self.end(body)


class NoiseH2Session:
    """Pump bytes: socket → Noise → h2 events → handler tasks; h2 output → Noise → socket."""

    def __init__(self, noise: ServerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 handler: Handler) -> None:
        self.noise = noise
        self.reader, self.writer = reader, writer
        self.handler = handler
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=cfg)
        self._requests: dict[int, H2Request] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._window = asyncio.Event()
        self._closed = False
        self._write_lock = asyncio.Lock()

    def check_open(self, stream_id: int) -> None:
        if self._closed or stream_id not in self._tasks:
            raise StreamClosed(stream_id)

    async def wait_window(self) -> None:
        self._window.clear()
        await self._window.wait()
        if self._closed:
            raise StreamClosed()

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if not data or self._closed:
            return
        async with self._write_lock:
            self.writer.write(self.noise.send(data))
            await self.writer.drain()

    async def run(self) -> None:
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
        try:
            await self.flush()
            while not self._closed:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                plain = self.noise.receive_data(data)
                if not plain:
                    continue
                events = self.h2.receive_data(plain)
                for ev in events:
                    self._on_event(ev)
                await self.flush()
        except (WireError, h2.exceptions.ProtocolError, ConnectionError) as e:
            log.info("noise/h2 session ended: %s", e)
        finally:
            self._closed = True
            self._window.set()
            tasks = list(self._tasks.values())
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                self.writer.close()

    def _on_event(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            hdrs = cast("dict[str, str]", dict(ev.headers or []))  # header_encoding="utf-8": str, not bytes
            self._requests[ev.stream_id] = H2Request(ev.stream_id, str(hdrs.get(":method", "")),
                                                     str(hdrs.get(":path", "")), {str(k): str(v)
                                                                                  for k, v in hdrs.items()})
            if ev.stream_ended is not None:
                self._dispatch(ev.stream_id)
        elif isinstance(ev, h2.events.DataReceived):
            req = self._requests.get(ev.stream_id)
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if req is None:
                return
            req.body += ev.data
            if len(req.body) > MAX_REQUEST_BODY:
                self._requests.pop(ev.stream_id, None)
                self.h2.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            elif ev.stream_ended is not None:
                self._dispatch(ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            if ev.stream_id in self._requests and ev.stream_id not in self._tasks:
                self._dispatch(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self._requests.pop(ev.stream_id, None)
            task = self._tasks.pop(ev.stream_id, None)
            if task is not None:
                task.cancel()
        elif isinstance(ev, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window.set()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self._closed = True

    def _dispatch(self, stream_id: int) -> None:
        if stream_id in self._tasks:
            return
        req = self._requests[stream_id]
        self._tasks[stream_id] = asyncio.get_running_loop().create_task(self._serve(req))

    async def _serve(self, req: H2Request) -> None:
        resp = H2Response(self, req.stream_id)
        try:
            await self.handler(req, resp)
            if not resp.ended:
                if not resp.started:
                    await resp.simple(500, b"handler wrote no response", "text/plain")
                else:
                    await resp.end()
        except (StreamClosed, ConnectionError, asyncio.CancelledError):
            pass  # the client reset the stream or went away, or the server is closing
        except Exception as e:  # a bug, not the client's fault: 500 and one line, no traceback per request
            log.error("handler for %s failed: %s: %s", req.path[:64], type(e).__name__, str(e)[:200])
            with contextlib.suppress(Exception):
                if not resp.started:
                    await resp.simple(500, b"internal error", "text/plain")
                elif not resp.ended:
                    self.h2.reset_stream(req.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                    await self.flush()
        finally:
            self._tasks.pop(req.stream_id, None)
            self._requests.pop(req.stream_id, None)
