"""UDP reflectors for the test labs: a 2x2 grid (two addresses x two ports) served by one thread.

Each socket answers

* ``b"who"`` with the sender's address as it sees it (``b"ip:port"``);
* ``b"via IP PORT"`` by having *that* socket send the sender's address to the sender instead: an
  unsolicited packet from a destination the inside never sent to (the NAT lab's filtering tests);
* a STUN Binding request (RFC 5389 magic cookie) as an RFC 5780 server: XOR-MAPPED-ADDRESS and
  MAPPED-ADDRESS, RESPONSE-ORIGIN and OTHER-ADDRESS, sent from the grid's other IP and/or other port
  when the request carries a CHANGE-REQUEST. miniupnpd's ``ext_perform_stun`` test asks exactly that
  (four requests: none, change port, change IP, both) and enables port forwarding only when all four
  answers arrive with the same mapping: it is how lab routers with RFC 5737 WAN addresses map.

Bad datagrams (not STUN, a malformed request, a change the grid cannot make) are counted in
``dropped``, never answered.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import socket
import threading
from collections.abc import Sequence

from pytsnet.testing.netns import Netns
from pytsnet.wire import stun

__all__ = ["Reflectors"]

Addr = tuple[str, int]


class Reflectors:
    """Reflector sockets at ``addrs`` in ``ns`` (all of them bound before the constructor returns)."""

    def __init__(self, ns: Netns, addrs: Sequence[Addr]) -> None:
        def bind_all() -> dict[Addr, socket.socket]:
            out = {}
            for a in addrs:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(a)
                out[a] = s
            return out

        self.socks = ns.call(bind_all)
        self.addrs = list(addrs)
        self.stun_answers = 0
        self.dropped = 0
        self._ips = list(dict.fromkeys(a for a, _ in addrs))
        self._ports = list(dict.fromkeys(p for _, p in addrs))
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"reflectors-{ns.name}", daemon=True)
        self._thread.start()

    def other(self, addr: Addr, *, change_ip: bool, change_port: bool) -> Addr | None:
        """The grid socket that answers a request to ``addr`` with these changes (None: no such one)."""
        ip, port = addr
        if change_ip:
            ip = next((i for i in self._ips if i != ip), "")
        if change_port:
            port = next((p for p in self._ports if p != port), 0)
        return (ip, port) if (ip, port) in self.socks else None

    def _run(self) -> None:
        by_fd = {s.fileno(): (a, s) for a, s in self.socks.items()}
        while True:
            ready, _, _ = select.select([self._stop_r, *by_fd], [], [])
            if self._stop_r in ready:
                return
            for fd in ready:
                with contextlib.suppress(OSError, ValueError):
                    local, sock = by_fd[fd]
                    data, src = sock.recvfrom(2048)
                    seen = f"{src[0]}:{src[1]}".encode()
                    if data == b"who":
                        sock.sendto(seen, src)
                    elif data.startswith(b"via "):
                        _, ip, port = data.decode().split()
                        self.socks[(ip, int(port))].sendto(seen, src)
                    elif stun.is_stun(data):
                        self._stun(local, data, src)
                    else:
                        self.dropped += 1

    def _stun(self, local: Addr, data: bytes, src: Addr) -> None:
        """Answer a Binding request from the socket its CHANGE-REQUEST names (RFC 5780 §6.1)."""
        try:
            req = stun.parse_server_request(data)
        except stun.StunParseError:
            self.dropped += 1
            return
        origin = self.other(local, change_ip=req.change_ip, change_port=req.change_port)
        alternate = self.other(local, change_ip=True, change_port=True)
        if origin is None:  # a one-address grid cannot change IP: not answered (RFC 5780 asks 420)
            self.dropped += 1
            return
        ip = ipaddress.ip_address
        reply = stun.server_response(
            req.tx_id, (ip(src[0]), src[1]), response_origin=(ip(origin[0]), origin[1]),
            other_address=None if alternate is None else (ip(alternate[0]), alternate[1]))
        self.socks[origin].sendto(reply, src)
        self.stun_answers += 1

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for s in self.socks.values():
            s.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
