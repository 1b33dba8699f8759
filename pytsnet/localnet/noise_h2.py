"""HTTP/2 (prior knowledge) served over one ts2021 Noise connection, with concurrent streams.

The Go client runs register, the map long-poll and lite map updates as parallel streams on one
Noise connection (``MaxConnsPerHost: 1``), so each request gets its own task; responses respect
HTTP/2 flow control, and a stream reset by the client cancels its task.

A session is bounded (:class:`~pytsnet.localnet.limits.ConnectionLimits`): it advertises
SETTINGS_MAX_CONCURRENT_STREAMS and refuses a stream beyond it with RST_STREAM REFUSED_STREAM; request
bodies are held to the HTTP/2 flow-control windows (a stream's initial window is the per-stream cap,
the connection window the per-session cap) and bytes go back to the connection window only when
their stream ends, so a client that obeys flow control cannot make the session buffer more, and one
that ignores it is closed with GOAWAY FLOW_CONTROL_ERROR. A session with no request being served and
nothing but PINGs received for ``idle_timeout`` is closed with GOAWAY NO_ERROR.
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
from h2.stream import StreamClosedBy
from hpack.exceptions import HPACKError
from hyperframe.frame import Frame, HeadersFrame, RstStreamFrame

from pytsnet.localnet.limits import MAX_REQUEST_BODY, ConnectionLimits
from pytsnet.wire.controlbase.stream import ServerStream
from pytsnet.wire.errors import WireError

__all__ = ["MAX_HEADER_LIST_SIZE", "MAX_REQUEST_BODY", "H2Request", "H2Response", "NoiseH2Session",
           "StreamClosed"]

log = logging.getLogger(__name__)
READ_SIZE = 65536
MAX_HEADER_LIST_SIZE = 8 << 10
"""A request's header block (HPACK-decoded size). Control requests carry a handful of short headers;
headers are not flow-controlled, so this bounds them per stream (times ``max_streams`` per session)."""
_QUIET_EVENTS = (h2.events.PingReceived, h2.events.PingAckReceived)  # not activity (as Go's IdleTimeout)


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


class _ServerConnection(h2.connection.H2Connection):
    """h2's connection, refusing one stream beyond SETTINGS_MAX_CONCURRENT_STREAMS instead of all.

    h2 answers such a HEADERS with GOAWAY, which would also end the client's map poll; RFC 9113
    §5.1.2 allows a stream error, and REFUSED_STREAM tells the client the request may be retried.
    """

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        self.refused_streams = 0

    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        try:
            return super()._receive_headers_frame(frame)
        except h2.exceptions.TooManyStreamsError:
            pass  # raised before h2 touched any state
        try:  # the header block must still go through HPACK, or the client's table and ours diverge
            self.decoder.decode(frame.data, raw=True)
        except (HPACKError, IndexError, TypeError, UnicodeDecodeError) as e:
            raise h2.exceptions.ProtocolError(f"undecodable header block: {e}") from None
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self.highest_inbound_stream_id:
            raise h2.exceptions.ProtocolError(f"invalid new stream ID {sid}")
        self.highest_inbound_stream_id = sid
        self._closed_streams[sid] = StreamClosedBy.SEND_RST_STREAM  # its DATA in flight is answered
        rst = RstStreamFrame(sid)
        rst.error_code = h2.errors.ErrorCodes.REFUSED_STREAM
        self.refused_streams += 1
        return [rst], []


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
    """Pump bytes: socket → Noise → h2 events → handler tasks; h2 output → Noise → socket.

    ``stats`` (the control server's) gets ``noise_idle_closed``, ``h2_streams_refused``,
    ``h2_protocol_errors`` (flow-control violations among them) and ``h2_buffered_peak`` (the most
    request bytes any one session held) added to it.
    """

    def __init__(self, noise: ServerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 handler: Handler, *, limits: ConnectionLimits | None = None,
                 stats: dict[str, int] | None = None) -> None:
        self.noise = noise
        self.reader, self.writer = reader, writer
        self.handler = handler
        self.limits = limits or ConnectionLimits()
        self.stats = stats if stats is not None else {}
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = _ServerConnection(cfg)
        # Replaced before initiate_connection, so h2 enforces them from the first frame on.
        codes = h2.settings.SettingCodes
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            codes.MAX_CONCURRENT_STREAMS: self.limits.max_streams,
            codes.INITIAL_WINDOW_SIZE: self.limits.max_stream_buffer,
            codes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE})
        self.h2.decoder.max_header_list_size = MAX_HEADER_LIST_SIZE  # h2 copies it only on a settings ACK
        self._requests: dict[int, H2Request] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._held: dict[int, int] = {}  # stream id → flow-controlled bytes it holds of the session window
        self.buffered = 0
        """Request bytes this session holds now (the sum of ``_held``); never above the session cap."""
        self.peak_buffered = 0
        self._window = asyncio.Event()
        self._closed = False
        self._write_lock = asyncio.Lock()
        self._last_active = 0.0
        self._refusals_logged = 0

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

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    async def run(self) -> None:
        self.h2.initiate_connection()
        extra = self.limits.max_session_buffer - self.h2.inbound_flow_control_window
        if extra > 0:  # the connection window starts at 65535 whatever the settings say
            self.h2.increment_flow_control_window(extra)
        loop = asyncio.get_running_loop()
        self._last_active = loop.time()
        watch = None if self.limits.idle_timeout is None else \
            loop.create_task(self._watch_idle(self.limits.idle_timeout))
        try:
            await self.flush()
            while not self._closed:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                plain = self.noise.receive_data(data)
                if not plain:
                    continue
                try:
                    events = self.h2.receive_data(plain)
                finally:
                    self._note_refusals()
                for ev in events:
                    self._on_event(ev)
                if any(not isinstance(ev, _QUIET_EVENTS) for ev in events):
                    self._last_active = loop.time()
                await self.flush()
        except h2.exceptions.ProtocolError as e:  # h2 queued a GOAWAY with the error code: send it
            self._count("h2_protocol_errors")
            log.info("noise/h2 session closed: %s: %s", type(e).__name__, str(e)[:200])
            with contextlib.suppress(Exception):
                await self.flush()
        except (WireError, ConnectionError) as e:
            log.info("noise/h2 session ended: %s", e)
        finally:
            self._closed = True
            self._window.set()
            tasks = [*self._tasks.values(), *([watch] if watch is not None else [])]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                self.writer.close()

    async def _watch_idle(self, timeout: float) -> None:
        """Close the session once no request has been served nor anything but PINGs received for
        ``timeout``. A running handler (a map long poll, a login waiting for approval) keeps it open."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            left = timeout if self._tasks else self._last_active + timeout - loop.time()
            if left > 0:
                await asyncio.sleep(left)
                continue
            self._count("noise_idle_closed")
            log.info("noise/h2 session idle for %.0fs: closed", timeout)
            self._closed = True
            with contextlib.suppress(Exception):
                self.h2.close_connection()  # GOAWAY NO_ERROR: the client redials for its next request
                data = self.h2.data_to_send()
                async with self._write_lock:
                    self.writer.write(self.noise.send(data))
                    await asyncio.wait_for(self.writer.drain(), 5)
            with contextlib.suppress(Exception):
                self.writer.close()
            return

    def _note_refusals(self) -> None:
        n = self.h2.refused_streams - self._refusals_logged
        if n <= 0:
            return
        self.stats["h2_streams_refused"] = self.stats.get("h2_streams_refused", 0) + n
        if not self._refusals_logged:  # one line per session; later refusals are only counted
            log.info("noise/h2 session refused a stream: %d concurrent streams open",
                     self.limits.max_streams)
        self._refusals_logged = self.h2.refused_streams

    def _hold(self, stream_id: int, n: int) -> None:
        self._held[stream_id] = self._held.get(stream_id, 0) + n
        self.buffered += n
        self.peak_buffered = max(self.peak_buffered, self.buffered)
        if self.buffered > self.stats.get("h2_buffered_peak", 0):
            self.stats["h2_buffered_peak"] = self.buffered

    def _release(self, stream_id: int) -> None:
        """The stream ended: its bytes go back to the session window (its own window is spent)."""
        n = self._held.pop(stream_id, 0)
        if n:
            self.buffered -= n
            self._return_window(n)

    def _return_window(self, n: int) -> None:
        if n and not self._closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):  # the connection is closing
                self.h2.increment_flow_control_window(n)

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
            if req is None or ev.stream_id in self._tasks:  # nothing to hold it for
                self._return_window(ev.flow_controlled_length)
                return
            # Not acknowledged: the stream's window (its body cap) and the session's stay spent
            # until the stream ends, so h2 refuses with FLOW_CONTROL_ERROR whatever goes beyond.
            self._hold(ev.stream_id, ev.flow_controlled_length)
            req.body += ev.data
            if ev.stream_ended is not None:
                self._dispatch(ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            if ev.stream_id in self._requests and ev.stream_id not in self._tasks:
                self._dispatch(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self._requests.pop(ev.stream_id, None)
            self._release(ev.stream_id)
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
            self._release(req.stream_id)
            self._last_active = asyncio.get_running_loop().time()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self.flush()  # the window update
