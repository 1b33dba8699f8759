"""A namespace lab for exit-node and subnet-router tests: an "internet", an exit node, a client.

    client ──veth── hub ──veth── exit ──veth── router ──veth── internet (HTTP, echo, DNS servers)
                                  └──veth── subnet (kernel TCP echo server)

* ``internet``: a kernel HTTP server (``python -m http.server``) and a TCP echo server on
  ``INTERNET_ADDR``, and a DNS server (dnspython) answering ``WEB_NAME`` with ``INTERNET_ADDR``
  (NXDOMAIN for anything else) on UDP and TCP port 53.
* ``router``: one IP hop (the only namespace with IP forwarding on) between ``exit`` and the
  internet: as on a real host, the internet is not on the exit node's own LAN (an exit node keeps
  its LANs to itself, as Go's "guest wifi" rule; ``actors/forwarder/lan.py``).
* ``exit``: the node that forwards. It reaches the internet (via ``router``) and the subnet; its
  ``/etc/netns/<name>/resolv.conf`` (what the namespace's processes and our resolver read) points
  at the internet's DNS server. IP forwarding stays off: only a userspace forwarder carries traffic.
* ``client``: the node that uses the exit node or subnet routes. It has NO route to the internet or
  the subnet, unless ``client_route=True`` (the "nothing leaks" capture variant): then a veth links
  it straight to the internet namespace, so a host-socket fallback would succeed.
* ``hub``: where the local tailnet's servers run (``LocalTailnet(listen=f"{HUB_ADDR}:0")``);
  ``HUB_ADDR`` is reachable from both node namespaces (and forwards nothing).
* ``subnet``: a kernel TCP echo server on ``SUBNET_SERVER`` in ``SUBNET`` (reachable from ``exit``
  only), for subnet-router tests.

Start a node's actors with ``with lab.exit.entered(): ...`` so every thread they start (and every
host socket a forwarder opens) lives in that namespace.
Run as ``python -m pytsnet.testing.exitlab dns|echo ADDR PORT [NAME=IP ...]`` to serve inside a
namespace (the lab does this itself).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pytsnet.messages.forwarder import ForwarderStatus, ForwarderStatusRequest
from pytsnet.messages.netstack import NetstackStatusRequest
from pytsnet.testing.netns import Netns, unique_tag, veth_pair

if TYPE_CHECKING:
    from pytsnet.actors.forwarder import ForwardLimits, ForwardTable
    from pytsnet.actors.runtime import ActorRef, ActorSystem
    from pytsnet.netstack.forward import ForwardPolicy
    from pytsnet.testing.tun import TunDevice

__all__ = ["ECHO_PORT", "HUB_ADDR", "INTERNET_ADDR", "RESET_ME", "SUBNET", "SUBNET_SERVER", "WEB_NAME",
           "WEB_PORT", "ExitLab", "TunRouter", "echo_roundtrip", "exit_lab", "tun_router"]

INTERNET_ADDR = "198.18.7.2"  # RFC 2544 benchmarking space: never routed on the internet
ROUTER_INTERNET_SIDE, EXIT_UPLINK, ROUTER_EXIT_SIDE = "198.18.7.1", "198.18.6.1", "198.18.6.2"
CLIENT_DIRECT, INTERNET_CLIENT_SIDE = "198.18.9.1", "198.18.9.2"
SUBNET = "10.33.44.0/24"
SUBNET_ROUTER_SIDE, SUBNET_SERVER = "10.33.44.1", "10.33.44.10"
HUB_ADDR, EXIT_HUB_SIDE, HUB_CLIENT_SIDE, CLIENT_HUB_SIDE = "10.99.1.1", "10.99.1.2", "10.99.2.1", "10.99.2.2"
WEB_NAME = "web.example.test"
WEB_PORT, ECHO_PORT = 8080, 7000
RESET_ME = b"RESET_ME"
WEB_BODY = b"hello from the lab internet\n"
TUN_KERNEL, TUN_STACK = "10.77.0.1", "10.77.0.2"


@dataclass
class ExitLab:
    internet: Netns
    router: Netns
    exit: Netns
    client: Netns
    hub: Netns
    subnet: Netns
    client_route: bool
    web_body: bytes = WEB_BODY
    client_direct_if: str | None = None
    """With ``client_route``: the client's interface towards the internet (nothing may leave on it)."""

    def tx_packets(self, ns: Netns, ifname: str) -> int:
        """Packets ``ifname`` in ``ns`` has sent (the kernel's counter: a leak check needs no capture)."""
        import json
        data = json.loads(ns.run(["ip", "-j", "-s", "link", "show", "dev", ifname]).stdout)
        return int(data[0]["stats64"]["tx"]["packets"])


def _wait_port(ns: Netns, addr: str, port: int, udp: bool = False, timeout: float = 20.0) -> None:
    def probe() -> bool:
        if udp:
            out = ns.run(["ss", "-Hlun", f"sport = :{port}"], check=False).stdout
            return bool(out.strip())
        try:
            socket.create_connection((addr, port), timeout=1).close()
            return True
        except OSError:
            return False

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ns.call(probe):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{addr}:{port} not serving in {ns.name}")


@contextlib.contextmanager
def exit_lab(tmp: Path, *, client_route: bool = False, prefix: str = "xl") -> Iterator[ExitLab]:
    """The lab above, torn down (servers killed, namespaces deleted) on exit."""
    made: list[Netns] = []

    def ns(role: str) -> Netns:
        n = Netns(f"{prefix}{role}{unique_tag()}")
        made.append(n)
        return n

    try:
        internet, router, exit_, client = ns("i"), ns("r"), ns("e"), ns("c")
        hub, subnet = ns("h"), ns("s")
        veth_pair(exit_, EXIT_UPLINK, router, ROUTER_EXIT_SIDE)
        veth_pair(router, ROUTER_INTERNET_SIDE, internet, INTERNET_ADDR)
        exit_.sh(f"ip route add {INTERNET_ADDR}/32 via {ROUTER_EXIT_SIDE}")
        internet.sh(f"ip route add {EXIT_UPLINK}/32 via {ROUTER_INTERNET_SIDE}")
        veth_pair(exit_, SUBNET_ROUTER_SIDE, subnet, SUBNET_SERVER)
        veth_pair(exit_, EXIT_HUB_SIDE, hub, HUB_ADDR)
        veth_pair(hub, HUB_CLIENT_SIDE, client, CLIENT_HUB_SIDE)
        client.sh(f"ip route add {HUB_ADDR}/32 via {HUB_CLIENT_SIDE}")
        direct_if: str | None = None
        if client_route:
            direct_if, _ = veth_pair(client, CLIENT_DIRECT, internet, INTERNET_CLIENT_SIDE)
            client.sh(f"ip route add {INTERNET_ADDR}/32 via {INTERNET_CLIENT_SIDE}")
        for n in made:
            n.sh(f"sysctl -qw net.ipv4.ip_forward={1 if n is router else 0}")
        (Path("/etc/netns") / exit_.name / "resolv.conf").write_text(f"nameserver {INTERNET_ADDR}\n")
        www = tmp / "www"
        www.mkdir(parents=True, exist_ok=True)
        (www / "index.html").write_bytes(WEB_BODY)
        py = sys.executable
        internet.popen([py, "-m", "http.server", str(WEB_PORT), "--bind", INTERNET_ADDR,
                        "--directory", str(www)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        internet.popen([py, "-m", "pytsnet.testing.exitlab", "echo", INTERNET_ADDR, str(ECHO_PORT)])
        internet.popen([py, "-m", "pytsnet.testing.exitlab", "dns", INTERNET_ADDR, "53",
                        f"{WEB_NAME}={INTERNET_ADDR}"])
        subnet.popen([py, "-m", "pytsnet.testing.exitlab", "echo", SUBNET_SERVER, str(ECHO_PORT)])
        _wait_port(internet, INTERNET_ADDR, WEB_PORT)
        _wait_port(internet, INTERNET_ADDR, ECHO_PORT)
        _wait_port(internet, INTERNET_ADDR, 53)
        _wait_port(subnet, SUBNET_SERVER, ECHO_PORT)
        if not client_route:
            client.assert_no_route_out()
            out = client.run(["ip", "route", "get", INTERNET_ADDR], check=False)
            if out.returncode == 0:
                raise AssertionError(f"client namespace reaches the internet: {out.stdout}")
        yield ExitLab(internet=internet, router=router, exit=exit_, client=client, hub=hub, subnet=subnet,
                      client_route=client_route, client_direct_if=direct_if)
    finally:
        for n in reversed(made):
            n.close()
            with contextlib.suppress(OSError):
                for f in (Path("/etc/netns") / n.name).iterdir():
                    f.unlink()
                (Path("/etc/netns") / n.name).rmdir()


@dataclass
class TunRouter:
    """A forwarding netstack (no WireGuard) whose peer is the client namespace's kernel, via a TUN.

    The kernel in ``lab.client`` routes ``INTERNET_ADDR`` and ``SUBNET`` into the TUN; the netstack
    and its forwarders run with every thread in ``lab.exit``, so forwarded flows leave through the
    exit namespace's host sockets. This proves the router side alone (no exit-node selection on a
    client, no control approval): a kernel socket in ``client`` stands for the peer's app.
    """

    system: ActorSystem
    table: ForwardTable
    netstack: ActorRef
    tun: TunDevice

    def forwarder_status(self) -> ForwarderStatus:
        ref = self.system.lookup("forwarder")
        assert ref is not None
        return ref.ask(ForwarderStatusRequest())

    def drops(self) -> dict[str, int]:
        return self.netstack.ask(NetstackStatusRequest()).drops


@contextlib.contextmanager
def tun_router(lab: ExitLab, policy: ForwardPolicy, limits: ForwardLimits | None = None,
               name: str = "exitlab") -> Iterator[TunRouter]:
    """Start the router of ``TunRouter`` in ``lab``; stopped (and the TUN closed) on exit."""
    from pytsnet.actors.forwarder import FORWARDER, ForwardTable, forwarder_spec
    from pytsnet.actors.forwarder.lan import with_host_lan
    from pytsnet.actors.netstack.channel import FlowRegistry
    from pytsnet.actors.netstack.subtree import netstack_spec
    from pytsnet.actors.runtime import ActorSystem, MailboxConfig, MailboxPolicy
    from pytsnet.net.link import TunLinkActor
    from pytsnet.netstack.config import StackConfig
    from pytsnet.testing.tun import open_tun

    tun = open_tun(lab.client, local=TUN_KERNEL, peer=TUN_STACK)
    system: ActorSystem | None = None
    try:
        lab.client.sh(f"ip route add {INTERNET_ADDR}/32 dev {tun.name}")
        lab.client.sh(f"ip route add {SUBNET} dev {tun.name}")
        with lab.exit.entered():  # the pool's threads, so the forwarders' sockets, live in exit
            policy = with_host_lan(policy)  # the exit namespace's LANs, as the device does
            system = ActorSystem(name, pool_workers=4)
            link = system.spawn(TunLinkActor, tun.fd, "netstack", name="tun-link",
                                mailbox=MailboxConfig(65536))
            registry = FlowRegistry()
            table = ForwardTable(limits)
            system.spawn_spec(forwarder_spec(system, "netstack", registry, table))
            config = StackConfig(addresses=(ipaddress.ip_address(TUN_STACK),), forward=policy)
            system.spawn_spec(netstack_spec(system, "netstack", config, link, registry, forwarder=FORWARDER,
                                            mailbox=MailboxConfig(65536, MailboxPolicy.DROP_NEWEST)))
        ref = system.lookup("netstack")
        assert ref is not None
        yield TunRouter(system=system, table=table, netstack=ref, tun=tun)
    finally:
        if system is not None:
            system.shutdown()
        tun.close()


# -- the servers (run inside a namespace as ``python -m pytsnet.testing.exitlab ...``) ---------------------
class _Stream(Protocol):
    def sendall(self, data: bytes) -> None: ...
    def shutdown(self, how: int) -> None: ...
    def recv(self, bufsize: int) -> bytes: ...


def echo_roundtrip(sock: _Stream, data: bytes) -> bytes:
    """``data`` to the lab's echo server over ``sock`` (a host socket or a tailnet one), our FIN, and
    what comes back until the server's FIN: byte-exact proof the whole path carried the flow."""
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    out = bytearray()
    while chunk := sock.recv(65536):
        out += chunk
    return bytes(out)


class _Echo(socketserver.BaseRequestHandler):
    """Echo every byte until the client's FIN, then FIN back: half-close shows on the wire. A
    connection whose first bytes are ``RESET_ME`` is reset instead (SO_LINGER 0), to test that a
    destination's RST reaches the peer."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        first = True
        while data := sock.recv(65536):
            if first and data.startswith(RESET_ME):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                return
            first = False
            sock.sendall(data)
        with contextlib.suppress(OSError):  # the client may be gone (reset) by now
            sock.shutdown(socket.SHUT_WR)


class _ThreadingTcp(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def _serve_dns(addr: str, port: int, table: dict[str, str]) -> None:
    import dns.message
    import dns.rcode
    import dns.rrset

    def answer(wire: bytes) -> bytes:
        q = dns.message.from_wire(wire)
        r = dns.message.make_response(q)
        name = q.question[0].name.to_text().rstrip(".").lower() if q.question else ""
        ip = table.get(name)
        if ip is None:
            r.set_rcode(dns.rcode.NXDOMAIN)
        elif q.question[0].rdtype == 1:  # A
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", ip))
        return r.to_wire()

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))  # before the TCP listener: the lab's readiness probe connects to that one

    def udp() -> None:
        while True:
            data, src = s.recvfrom(4096)
            with contextlib.suppress(Exception):
                s.sendto(answer(data), src)

    class Tcp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            with contextlib.suppress(Exception):
                n = int.from_bytes(sock.recv(2), "big")
                data = b""
                while len(data) < n:
                    chunk = sock.recv(n - len(data))
                    if not chunk:
                        return
                    data += chunk
                out = answer(data)
                sock.sendall(len(out).to_bytes(2, "big") + out)

    threading.Thread(target=udp, daemon=True).start()
    _ThreadingTcp((addr, port), Tcp).serve_forever()


def main(argv: list[str]) -> None:
    kind, addr, port = argv[0], argv[1], int(argv[2])
    if kind == "echo":
        _ThreadingTcp((addr, port), _Echo).serve_forever()
    elif kind == "dns":
        _serve_dns(addr, port, dict(a.split("=", 1) for a in argv[3:]))
    else:
        raise SystemExit(f"unknown server {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
