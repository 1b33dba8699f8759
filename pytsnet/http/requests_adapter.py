"""``requests`` over the tailnet: an ``HTTPAdapter`` whose connections are bridged tailnet dials.

requests → urllib3's pool → ``HTTPConnection._new_conn``, the one place urllib3 makes a socket (and
the narrowest hook it has: no public connect factory exists). Ours asks the device for a real socket
bridged to a tailnet dial (``dev.connect_socket``: MagicDNS names, exit node and fail-closed policy
all behind it), so everything above it works unchanged: keep-alive and connection reuse (urllib3 checks
a pooled connection with ``select`` on its fd — the bug a fd-less socket had), timeouts, TLS for
``https://`` (urllib3 wraps our socket, verifying the name as usual).

Nothing falls back to the host network: a host that is not on the tailnet fails the dial with the
device's typed error (``UnknownTailnetHost``…), which urllib3 reports as ``NewConnectionError`` (its
``__cause__``) and requests as ``requests.ConnectionError``; environment proxies are ignored
(``trust_env`` off) and an explicit proxy is refused, since a proxy pool would dial from the host.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from pytsnet.errors import PytsnetError

__all__ = ["Dial", "ProxyRefused", "TailnetAdapter", "tailnet_session"]

Dial = Callable[[str, int, float], socket.socket]
"""``(host, port, timeout)`` → a connected real socket through the tailnet (``dev.connect_socket``)."""


class ProxyRefused(PytsnetError, requests.exceptions.ProxyError):
    """A tailnet session was given a proxy: a proxy is dialed from the host network, so it is refused
    (tailnet dials never leave the tailnet; use ``dev.loopback()`` to give other programs a proxy)."""


def _connection_class(base: type[HTTPConnection], dial: Dial, connect_timeout: float) -> type[HTTPConnection]:
    def _new_conn(self: HTTPConnection) -> socket.socket:
        t = self.timeout
        timeout = float(t) if isinstance(t, (int, float)) else connect_timeout
        try:
            sock = dial(self._dns_host, self.port, timeout)
        except TimeoutError as e:
            raise ConnectTimeoutError(self, f"tailnet dial to {self.host}:{self.port} timed out: {e}") from e
        except OSError as e:
            raise NewConnectionError(self, f"Failed to establish a tailnet connection: {e}") from e
        sock.settimeout(timeout if isinstance(t, (int, float)) else None)
        return sock

    return type(f"Tailnet{base.__name__}", (base,), {"_new_conn": _new_conn})


class TailnetAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose urllib3 pools dial with ``dial``; pooling and reuse are urllib3's."""

    def __init__(self, dial: Dial, connect_timeout: float = 30.0, **kw: Any) -> None:
        self._dial = dial
        self._connect_timeout = connect_timeout
        super().__init__(**kw)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        http = _connection_class(HTTPConnection, self._dial, self._connect_timeout)
        https = _connection_class(HTTPSConnection, self._dial, self._connect_timeout)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("TailnetHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("TailnetHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise ProxyRefused(f"proxy {proxy!r} refused: a tailnet session never dials from the host network")

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        raise TypeError("a tailnet adapter cannot be unpickled (its dial belongs to a live device)")


def tailnet_session(dial: Dial, connect_timeout: float = 30.0) -> requests.Session:
    """A ``requests.Session`` whose ``http://`` and ``https://`` go through ``dial`` only."""
    session = requests.Session()
    session.trust_env = False  # HTTP(S)_PROXY / netrc from the environment: never for tailnet traffic
    adapter = TailnetAdapter(dial, connect_timeout)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
