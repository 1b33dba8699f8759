"""httpx clients whose every request crosses the tailnet: ``dev.http_client()`` and
``dev.sync_http_client()`` (Go tsnet's ``Server.HTTPClient``).

The transports here own an httpcore connection pool over ``pytsnet.http.backend`` (httpcore's public
``network_backend`` seam) and translate httpx requests, responses and errors themselves, so they rely
on no private httpx attribute.

Errors are httpx's (what httpx code already catches: ``httpx.ConnectError``, ``ConnectTimeout``,
``ReadTimeout``…); when a pytsnet error is behind one it is the ``__cause__``: a host that is not on
the tailnet gives ``httpx.ConnectError`` caused by ``UnknownTailnetHost`` (or ``ExitNodeUnavailable``),
a dial that does not complete in the connect timeout ``httpx.ConnectTimeout`` caused by
``DialTimeout``, a refused port ``httpx.ConnectError`` caused by ``ConnectionRefused``.

Fail closed: ``transport``, ``mounts`` and ``proxy`` are refused (each would route requests past the
tailnet), and ``trust_env`` defaults to False. Even when set True it never brings in
``HTTP(S)_PROXY``/``ALL_PROXY`` (httpx takes proxies from the environment only for its own default
transport); it only lets ``SSL_CERT_FILE``/``SSL_CERT_DIR`` and ``~/.netrc`` count, as in httpx.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

from pytsnet.http.backend import AsyncDial, AsyncTailnetBackend, SyncDial, TailnetBackend, cause_of

__all__ = ["AsyncTailnetTransport", "TailnetTransport", "async_client", "sync_client"]

REFUSED = ("transport", "mounts", "proxy")
"""Client arguments that would send requests somewhere other than through the tailnet."""

TRANSPORT_ARGS = ("verify", "cert", "http1", "http2", "limits", "retries")
"""Arguments the transport takes (httpx hands them to its own default transport, which we replace)."""

_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)
"""httpcore's errors to httpx's, most specific first."""

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
"""httpx's own default pool limits."""


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpcore's error as httpx's; the pytsnet (or OS) error behind it stays the ``__cause__``."""
    try:
        yield
    except Exception as exc:
        for core, ours in _ERRORS:
            if isinstance(exc, core):
                cause = cause_of(exc)
                raise ours(str(exc)) from (cause if isinstance(cause, OSError) else exc)
        raise


def _core_request(request: httpx.Request, content: Any) -> httpcore.Request:
    url = request.url
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
        headers=request.headers.raw, content=content, extensions=request.extensions)


def _pool_args(verify: ssl.SSLContext | str | bool, cert: Any, trust_env: bool, http1: bool, http2: bool,
               limits: httpx.Limits, retries: int) -> dict[str, Any]:
    return {"ssl_context": httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env),
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry, "http1": http1, "http2": http2, "retries": retries}


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        with _httpx_errors():
            await self._stream.aclose()


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        with _httpx_errors():
            self._stream.close()


class AsyncTailnetTransport(httpx.AsyncBaseTransport):
    """An httpx transport that dials with ``dial`` (the device's ``tcp_connect``). ``http2=True`` lets
    TLS connections negotiate HTTP/2 (ALPN); ``http1=False, http2=True`` speaks HTTP/2 with prior
    knowledge, also in cleartext (h2c)."""

    def __init__(self, dial: AsyncDial, *, dial_timeout: float, verify: ssl.SSLContext | str | bool = True,
                 cert: Any = None, trust_env: bool = False, http1: bool = True, http2: bool = False,
                 limits: httpx.Limits = DEFAULT_LIMITS,
                 retries: int = 0) -> None:
        self.backend = AsyncTailnetBackend(dial, dial_timeout)
        self._pool = httpcore.AsyncConnectionPool(
            network_backend=self.backend,
            **_pool_args(verify, cert, trust_env, http1, http2, limits, retries))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        with _httpx_errors():
            resp = await self._pool.handle_async_request(_core_request(request, request.stream))
        return httpx.Response(status_code=resp.status, headers=resp.headers, stream=_AsyncBody(resp.stream),
                              extensions=resp.extensions)

    async def aclose(self) -> None:
        with _httpx_errors():
            await self._pool.aclose()


class TailnetTransport(httpx.BaseTransport):
    """The blocking twin of ``AsyncTailnetTransport`` (dials with ``tcp_connect_blocking``)."""

    def __init__(self, dial: SyncDial, *, dial_timeout: float, verify: ssl.SSLContext | str | bool = True,
                 cert: Any = None, trust_env: bool = False, http1: bool = True, http2: bool = False,
                 limits: httpx.Limits = DEFAULT_LIMITS,
                 retries: int = 0) -> None:
        self.backend = TailnetBackend(dial, dial_timeout)
        self._pool = httpcore.ConnectionPool(
            network_backend=self.backend,
            **_pool_args(verify, cert, trust_env, http1, http2, limits, retries))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        with _httpx_errors():
            resp = self._pool.handle_request(_core_request(request, request.stream))
        return httpx.Response(status_code=resp.status, headers=resp.headers, stream=_Body(resp.stream),
                              extensions=resp.extensions)

    def close(self) -> None:
        with _httpx_errors():
            self._pool.close()


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(transport arguments, client arguments); a routing argument is refused."""
    for name in REFUSED:
        if name in kwargs:
            raise TypeError(f"{name}= would send requests past the tailnet: a tailnet client dials every "
                            "connection through the device (a proxy belongs on a plain httpx client)")
    transport = {k: kwargs.pop(k) for k in TRANSPORT_ARGS if k in kwargs}
    kwargs.setdefault("trust_env", False)
    transport["trust_env"] = kwargs["trust_env"]
    return transport, kwargs


def async_client(dial: AsyncDial, dial_timeout: float, **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over the tailnet; ``kwargs`` as httpx's (``timeout``, ``headers``,
    ``base_url``, ``follow_redirects``, ``http2``, ``verify``, ``limits``…, plus httpcore's
    ``retries``)."""
    transport, client = _split(kwargs)
    return httpx.AsyncClient(transport=AsyncTailnetTransport(dial, dial_timeout=dial_timeout, **transport),
                             **client)


def sync_client(dial: SyncDial, dial_timeout: float, **kwargs: Any) -> httpx.Client:
    """The blocking twin of ``async_client``: an ``httpx.Client`` over the tailnet."""
    transport, client = _split(kwargs)
    return httpx.Client(transport=TailnetTransport(dial, dial_timeout=dial_timeout, **transport), **client)
