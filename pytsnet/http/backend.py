"""httpcore network backends whose every connection is a tailnet dial (Go tsnet's ``HTTPClient``
sets ``Transport.DialContext`` to ``Server.Dial``; httpcore's public seam for the same is
``network_backend``).

``AsyncTailnetBackend`` dials with the device's ``tcp_connect`` (an anyio ``TcpStream``),
``TailnetBackend`` with ``tcp_connect_blocking`` (a ``SocketLike``): MagicDNS names, the exit node
and fail-closed routing all stay behind those two calls, so a host that is not on the tailnet is
refused there and never reaches a host socket.

Errors leave as httpcore's own (``ConnectError``, ``ConnectTimeout``, ``ReadError``…), which the
transports in ``pytsnet.http.client`` turn into httpx's; the pytsnet error behind one (a dial's
``UnknownTailnetHost``, ``DialTimeout``, a ``ConnectionReset``…) rides along (``cause_of``: httpcore's
pool re-raises ``from None``, which would lose a ``__cause__``).

``is_readable`` answers from the flow's channel without consuming anything: an idle keep-alive
connection with bytes or an EOF waiting was closed (or broken) by the server, and the pool must not
send the next request on it.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpcore
from anyio.streams.tls import TLSAttribute, TLSStream

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.net import SocketLike, TcpStream

__all__ = ["AsyncTailnetBackend", "AsyncTailnetStream", "TailnetBackend", "TailnetStream", "cause_of"]

AsyncDial = Callable[[str, int, float], Awaitable[TcpStream]]
SyncDial = Callable[[str, int, float], SocketLike]

TLS_RECORD = 16384
"""What a blocking TLS stream asks of the flow per read: one maximal TLS record."""


CAUSE = "pytsnet_error"
"""Where an httpcore error carries the error behind it (httpcore's pool re-raises ``from None``)."""


def cause_of(exc: BaseException) -> BaseException | None:
    """The pytsnet/OS error behind an httpcore error this module raised, if any."""
    got = getattr(exc, CAUSE, None)
    return got if isinstance(got, BaseException) else None


def _wrapped(kind: type[Exception], e: BaseException) -> Exception:
    err = kind(str(e) or type(e).__name__)
    setattr(err, CAUSE, e)
    return err


@contextmanager
def _mapped(timeout: type[Exception], other: type[Exception], *, any_timeout: bool = False) -> Iterator[None]:
    """Our deadline (a bare ``TimeoutError``; with ``any_timeout`` also a typed one, a dial's
    ``DialTimeout``) becomes ``timeout``; every other failure of the flow (``OSError``: a reset, a TCP
    retransmission timeout, a crashed flow; anyio's closed/broken stream; TLS) becomes ``other``,
    carrying the original (``cause_of``)."""
    try:
        yield
    except TimeoutError as e:
        raise _wrapped(timeout if any_timeout or type(e) is TimeoutError else other, e) from e
    except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream,
            ssl.SSLError) as e:
        raise _wrapped(other, e) from e


def _connect_mapped() -> contextlib.AbstractContextManager[None]:
    return _mapped(httpcore.ConnectTimeout, httpcore.ConnectError, any_timeout=True)


def _readable(ch: FlowChannel) -> bool:
    return ch.recv_ready()  # a snapshot: bytes, an EOF or the flow's error are waiting (nothing consumed)


# -- async ------------------------------------------------------------------------------------------------
class AsyncTailnetStream(httpcore.AsyncNetworkStream):
    """One tailnet TCP connection (or TLS over it) as httpcore sees it."""

    def __init__(self, stream: TcpStream | TLSStream, channel: FlowChannel) -> None:
        self._stream = stream
        self._ch = channel

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError), anyio.fail_after(timeout):
            try:
                return await self._stream.receive(max_bytes)
            except anyio.EndOfStream:
                return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError), anyio.fail_after(timeout):
            await self._stream.send(buffer)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):  # a TLS close_notify must not leave the flow open
            with contextlib.suppress(OSError, anyio.BrokenResourceError, ssl.SSLError):
                await self._stream.aclose()  # if already broken, the flow is closed either way

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> AsyncTailnetStream:
        try:
            with _connect_mapped(), anyio.fail_after(timeout):
                tls = await TLSStream.wrap(self._stream, hostname=server_hostname, ssl_context=ssl_context,
                                           standard_compatible=False)
        except BaseException:
            await self.aclose()
            raise
        return AsyncTailnetStream(tls, self._ch)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._stream.extra(TLSAttribute.ssl_object, None)
        if info == "client_addr":
            return self._ch.local
        if info == "server_addr":
            return self._ch.remote
        if info == "is_readable":
            return _readable(self._ch)
        return None  # "socket": there is none, the connection lives in the userspace netstack


class AsyncTailnetBackend(httpcore.AsyncNetworkBackend):
    """Connects with ``dial(host, port, timeout)`` (the device's ``tcp_connect``). ``dial_timeout``
    bounds a dial whose httpx connect timeout is None (a tailnet dial always has a bound)."""

    def __init__(self, dial: AsyncDial, dial_timeout: float) -> None:
        self._dial = dial
        self._dial_timeout = dial_timeout

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
                          ) -> AsyncTailnetStream:
        with _connect_mapped():
            stream = await self._dial(host, port, self._dial_timeout if timeout is None else timeout)
        return AsyncTailnetStream(stream, stream._ch)  # the channel: readiness without a read

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
                                  ) -> AsyncTailnetStream:
        raise httpcore.ConnectError("a tailnet HTTP client dials tailnet TCP only, not a unix socket")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


# -- blocking ---------------------------------------------------------------------------------------------
class TailnetStream(httpcore.NetworkStream):
    """The blocking twin: a ``SocketLike`` over the flow's channel, TLS through a memory BIO (an
    ``SSLObject``: ``ssl.wrap_socket`` needs a real socket, and there is none)."""

    def __init__(self, sock: SocketLike, tls: ssl.SSLObject | None = None) -> None:
        self._sock = sock
        self._ch: FlowChannel = sock._ch
        self._tls = tls
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()

    @staticmethod
    def _left(deadline: float | None) -> float | None:
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left

    def _recv(self, n: int, deadline: float | None) -> bytes:
        self._sock.settimeout(self._left(deadline))
        return self._sock.recv(n)

    def _send(self, data: bytes, deadline: float | None) -> None:
        view = memoryview(data)
        while view:
            self._sock.settimeout(self._left(deadline))
            view = view[self._sock.send(view):]  # type: ignore[arg-type]

    def _tls_io(self, op: Callable[[], Any], deadline: float | None) -> Any:
        """Run ``op`` on the TLS object, moving records to and from the flow until it completes."""
        while True:
            try:
                got = op()
            except ssl.SSLWantReadError:
                self._send(self._out.read(), deadline)
                data = self._recv(TLS_RECORD, deadline)
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()
                continue
            self._send(self._out.read(), deadline)
            return got

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            tls = self._tls
            if tls is None:
                return self._recv(max_bytes, deadline)
            try:
                return bytes(self._tls_io(lambda: tls.read(max_bytes), deadline))
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLEOFError:
                return b""  # the server closed without close_notify: an EOF all the same

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            tls = self._tls
            if tls is None:
                self._send(buffer, deadline)
            else:
                self._tls_io(lambda: tls.write(buffer), deadline)

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> TailnetStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        out = TailnetStream(self._sock)
        out._tls = ssl_context.wrap_bio(out._in, out._out, server_hostname=server_hostname)
        try:
            with _connect_mapped():
                out._tls_io(out._tls.do_handshake, deadline)
        except BaseException:
            self.close()
            raise
        return out

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._tls
        if info == "client_addr":
            return self._ch.local
        if info == "server_addr":
            return self._ch.remote
        if info == "is_readable":
            return _readable(self._ch) or (self._tls is not None and self._in.pending > 0)
        return None


class TailnetBackend(httpcore.NetworkBackend):
    """Connects with ``dial(host, port, timeout)`` (the device's ``tcp_connect_blocking``)."""

    def __init__(self, dial: SyncDial, dial_timeout: float) -> None:
        self._dial = dial
        self._dial_timeout = dial_timeout

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> TailnetStream:
        with _connect_mapped():
            sock = self._dial(host, port, self._dial_timeout if timeout is None else timeout)
        return TailnetStream(sock)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> TailnetStream:
        raise httpcore.ConnectError("a tailnet HTTP client dials tailnet TCP only, not a unix socket")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
