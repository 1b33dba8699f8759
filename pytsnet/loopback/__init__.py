"""Loopback proxies (Go tsnet ``Loopback``): SOCKS5 and HTTP proxies onto the tailnet on 127.0.0.1.

``dev.loopback()`` returns ``(addr, proxy_cred, local_api_cred)`` as Go does: ``addr`` is
``127.0.0.1:PORT``, one listener for a SOCKS5 proxy (user ``tsnet``, password ``proxy_cred``;
CONNECT and UDP ASSOCIATE) and, on the same port, an HTTP proxy (CONNECT and ``http://`` absolute
URIs, ``Proxy-Authorization: Basic tsnet:proxy_cred``) — a Go TODO, done here. The LocalAPI joins the
listener in a later issue (``local_api_cred`` is kept for it; until then ``/localapi/`` answers 501).
Credentials are 16 random bytes in hex, as Go's, stable for the device's life; the listener is bound
to 127.0.0.1 only. Every dial is the device's (``tcp_connect_blocking``, ``listen_packet_blocking``):
a target outside the tailnet (or the engaged exit node) is refused, never dialed from the host.

The actors (``server.py``: the accept loop; ``conn.py``: one per connection) are spawned in the
device's actor system on the first ``loopback()`` and stop with it.
"""

from __future__ import annotations

import secrets
import socket

from pytsnet.actors.runtime import ActorStopped, ActorSystem, AskTimeout
from pytsnet.loopback.conn import ProxyCreds, TailnetDialer
from pytsnet.loopback.server import loopback_spec
from pytsnet.messages.loopback import LoopbackSpawn, LoopbackStatus, LoopbackStatusRequest

__all__ = ["LOOPBACK", "Loopback", "ProxyCreds"]

LOOPBACK = "loopback"
_BACKLOG = 128


class Loopback:
    """The listener, the credentials and the actors of one device's loopback proxies."""

    def __init__(self, system: ActorSystem, dialer: TailnetDialer, *, name: str = LOOPBACK,
                 **limits: float) -> None:
        """``limits``: ``LoopbackSpawn`` fields (``max_connections``, ``handshake_timeout``…)."""
        self.creds = ProxyCreds(proxy=secrets.token_hex(16), local_api=secrets.token_hex(16))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            sock.listen(_BACKLOG)
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        self.address = f"127.0.0.1:{self.port}"
        self.spawn = LoopbackSpawn.model_validate(
            {"port": self.port, "server": name, "conns": f"{name}.conns", **limits})
        self._system = system
        try:
            system.spawn_spec(loopback_spec(system, self.spawn, sock, self.creds, dialer))
        except BaseException:
            sock.close()
            raise

    def status(self, timeout: float = 5.0) -> LoopbackStatus:
        """Open connections and the counters (proxied by kind, refusals by reason)."""
        ref = self._system.lookup(self.spawn.server)
        if ref is not None:
            try:
                return ref.ask(LoopbackStatusRequest(), timeout=timeout)
            except (ActorStopped, AskTimeout):
                pass
        return LoopbackStatus(port=self.port)
