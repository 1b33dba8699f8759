"""One SOCKS5 UDP ASSOCIATE: datagrams between a 127.0.0.1 UDP socket and a tailnet UDP socket.

As Go's ``net/socks5`` (``handleUDP``): the reply names a fresh UDP port on the loopback address;
the client sends ``RSV FRAG ATYP DST.ADDR DST.PORT DATA`` there and each payload goes out of the
device's tailnet UDP socket (``listen_packet_blocking``: its ``sendto`` resolves names through
MagicDNS and refuses anything beyond the tailnet); what comes back is wrapped with its source and
sent to the client. Only datagrams from 127.0.0.1 are taken, and once one came, only from that
port (RFC 1928 lets the relay restrict the association to its client). The association lasts as
long as the TCP connection that asked for it (RFC 1928 §7). One datagram at a time each way, at most
``max_datagram`` bytes: nothing queues here; a refused or malformed datagram is a counted drop.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

from pytsnet.net import UdpSocket
from pytsnet.wire.socks5 import Socks5Error, decode_udp, encode_udp

__all__ = ["UdpRelay"]

_SLICE = 0.5


class UdpRelay:
    def __init__(self, tailnet: UdpSocket, *, stop: threading.Event, count: Callable[[str], None],
                 max_datagram: int = 65535) -> None:
        self.tailnet = tailnet
        self.stop = stop
        self.count = count
        self.max_datagram = max_datagram
        self.host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.host.bind(("127.0.0.1", 0))
        self.host.settimeout(_SLICE)
        self._client: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.host.getsockname()[:2]
        return str(host), int(port)

    def run(self, control: socket.socket) -> None:
        """Relay until the control connection ends (its bytes are discarded) or ``stop``."""
        threads = [threading.Thread(target=fn, name=f"socks-udp-{fn.__name__}", daemon=True)
                   for fn in (self._up, self._down)]
        for t in threads:
            t.start()
        try:
            control.settimeout(_SLICE)
            while not self.stop.is_set():
                try:
                    if not control.recv(4096):
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
        finally:
            self.stop.set()
            for t in threads:
                t.join(2 * _SLICE + 1.0)
            self.host.close()
            self.tailnet.close()

    def _up(self) -> None:
        """Client → tailnet."""
        while not self.stop.is_set():
            try:
                data, src = self.host.recvfrom(self.max_datagram + 512)
            except TimeoutError:
                continue
            except OSError:
                return
            if src[0] != "127.0.0.1" or (self._client is not None and src != self._client):
                self.count("udp_dropped")
                continue
            self._client = (src[0], src[1])
            try:
                d = decode_udp(data)
            except Socks5Error:
                self.count("udp_dropped")
                continue
            if len(d.data) > self.max_datagram:
                self.count("udp_dropped")
                continue
            try:
                self.tailnet.sendto_blocking(d.data, (d.host, d.port))
            except OSError:  # not a tailnet target (UnknownTailnetHost…), or not Running
                self.count("udp_dropped")
                continue
            self.count("udp_datagrams")

    def _down(self) -> None:
        """Tailnet → client, each datagram wrapped with its source."""
        while not self.stop.is_set():
            try:
                data, (ip, port) = self.tailnet.recvfrom_blocking(_SLICE)
            except TimeoutError:
                continue
            except OSError:
                return
            client = self._client
            if client is None:
                self.count("udp_dropped")  # nobody to give it to yet
                continue
            with contextlib.suppress(OSError):
                self.host.sendto(encode_udp(ip, port, data), client)
                self.count("udp_datagrams")
