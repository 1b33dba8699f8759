"""Netstack benchmark: pytsnet<->kernel TCP through a TUN and the actors, next to kernel<->kernel.

Run as root: ``.venv/bin/python bench/netstack.py [--mib 16] [--idle 10000]``. Prints single-flow
throughput both ways through the per-flow actors and the blocking app API, the kernel<->kernel
limit over a veth pair between two namespaces in the same run, and the RSS growth for ``--idle``
idle connections (kernel clients to a pytsnet listener, every one accepted by the app).

``--micro`` (no root) instead prints µs per call of each per-packet function (parse, emit,
checksum, filter) on a 1,280-byte packet. It calls only long-standing signatures, so the same
script run against an older checkout (``cd /tmp && PYTHONPATH=<old worktree> python
<this file> --micro``) gives before/after numbers on the same minute.
"""

from __future__ import annotations

import argparse
import ipaddress
import resource
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pytsnet.actors.runtime import ActorSystem, MailboxConfig
from pytsnet.net import Netstack
from pytsnet.net.link import TunLinkActor
from pytsnet.netstack.config import StackConfig
from pytsnet.testing.netns import Netns, isolated_netns, veth_pair
from pytsnet.testing.tun import open_tun

KERNEL, STACK = "10.77.0.1", "10.77.0.2"
CHUNK = 256 * 1024


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _sink_server(ns: Netns, host: str, port: int, total: int,
                 send: bool) -> tuple[socket.socket, threading.Thread]:
    srv = ns.call(lambda: socket.create_server((host, port)))

    def run() -> None:
        c, _ = srv.accept()
        with c:
            if send:
                buf = b"\x5a" * CHUNK
                left = total
                while left:
                    left -= c.send(buf[:min(left, CHUNK)])
                c.shutdown(socket.SHUT_WR)
                c.recv(1)
            else:
                while c.recv(CHUNK):
                    pass
                c.sendall(b"k")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv, t


def kernel_to_kernel(mib: int) -> tuple[float, float]:
    with isolated_netns("bka") as a, isolated_netns("bkb") as b:
        veth_pair(a, "10.78.0.1", b, "10.78.0.2")
        total = mib << 20
        rates = []
        for send in (False, True):
            srv, t = _sink_server(b, "10.78.0.2", 9000 + send, total, send)
            with srv:
                def client(send: bool = send) -> float:
                    with socket.create_connection(("10.78.0.2", 9000 + send), timeout=30) as c:
                        t0 = time.perf_counter()
                        if send:
                            while c.recv(CHUNK):
                                pass
                            c.sendall(b"k")
                        else:
                            buf = b"\x5a" * CHUNK
                            for _ in range(total // CHUNK):
                                c.sendall(buf)
                            c.shutdown(socket.SHUT_WR)
                            c.recv(1)
                        return time.perf_counter() - t0

                rates.append(total * 8 / a.call(client) / 1e6)
            t.join(30)
        return rates[0], rates[1]


def idle_connections(ns: Netns, net: Netstack, idle: int, port: int = 9200) -> tuple[float, float]:
    """Open ``idle`` kernel clients to a pytsnet listener, all accepted by the app, and leave them idle.

    Returns (RSS growth in MiB, setup seconds); the sockets are closed before returning.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, idle * 2 + 1000)), hard))
    lst = net.listen(port, backlog=128)
    lst.settimeout(30)
    accepted: list[object] = []
    base = rss_mib()
    t0 = time.perf_counter()

    def acceptor() -> None:
        for _ in range(idle):
            accepted.append(lst.accept()[0])

    at = threading.Thread(target=acceptor, daemon=True)
    at.start()

    def dial_all() -> list[socket.socket]:
        socks = []
        for _ in range(idle):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex((STACK, port))
            socks.append(c)
            while len(socks) - len(accepted) > 100:
                time.sleep(0.001)
        return socks

    socks = ns.call(dial_all)
    at.join(120)
    setup = time.perf_counter() - t0
    time.sleep(1.0)
    per_conn_rss = rss_mib() - base
    for c in socks:
        c.close()
    return per_conn_rss, setup


def pytsnet_flows(mib: int, idle: int) -> tuple[float, float, float, float]:
    total = mib << 20
    with isolated_netns("bnt") as ns:
        tun = open_tun(ns, local=KERNEL, peer=STACK)
        system = ActorSystem("bench-netstack", pool_workers=2)
        try:
            link = system.spawn(TunLinkActor, tun.fd, "netstack", name="tun-link",
                                mailbox=MailboxConfig(65536))
            net = Netstack.start(system, StackConfig(addresses=(ipaddress.ip_address(STACK),)), link)
            # pytsnet -> kernel (upload through the blocking twin)
            srv, _ = _sink_server(ns, KERNEL, 9100, total, False)
            with srv:
                s = net.create_connection((KERNEL, 9100), timeout=30)
                buf = b"\x5a" * CHUNK
                t0 = time.perf_counter()
                for _ in range(total // CHUNK):
                    s.sendall(buf)
                s.shutdown(socket.SHUT_WR)
                assert s.recv(1) == b"k"
                up = total * 8 / (time.perf_counter() - t0) / 1e6
                s.close()
            # kernel -> pytsnet (download)
            srv, _ = _sink_server(ns, KERNEL, 9101, total, True)
            with srv:
                s = net.create_connection((KERNEL, 9101), timeout=30)
                got, t0 = 0, time.perf_counter()
                while chunk := s.recv(CHUNK):
                    got += len(chunk)
                down = total * 8 / (time.perf_counter() - t0) / 1e6
                assert got == total
                s.sendall(b"k")
                s.close()
            time.sleep(0.5)
            per_conn_rss, setup = idle_connections(ns, net, idle)
            return up, down, per_conn_rss, setup
        finally:
            system.shutdown(30)
            tun.close()


def micro_cases() -> dict[str, Callable[[], object]]:
    """One closure per per-packet function, each on a typical packet of the bulk TCP path."""
    from pytsnet.netstack import checksum, ipv4, udp
    from pytsnet.netstack import filter as pfilter
    from pytsnet.netstack.tcp import segment as tcpseg

    a, b = ipaddress.IPv4Address("100.64.0.1"), ipaddress.IPv4Address("100.64.0.2")
    data = bytes(range(256)) * 5
    seg = tcpseg.TcpSegment(40000, 443, 123456789, 987654321, tcpseg.ACK | tcpseg.PSH, 65535,
                            timestamp=(11, 22), payload=data[:1228])
    tcp_bytes = tcpseg.emit_segment(seg, a, b)
    ack = tcpseg.TcpSegment(443, 40000, 987654321, 123456789, tcpseg.ACK, 65535, timestamp=(22, 11))
    ip_pkt = ipv4.Ipv4Packet(a, b, ipv4.PROTO_TCP, tcp_bytes, ttl=64, ident=7)
    ip_bytes = ipv4.emit_ipv4(ip_pkt)
    dgram = udp.UdpDatagram(40000, 53, data[:1200])
    udp_bytes = udp.emit_udp(dgram, a, b)
    udp_ip = ipv4.emit_ipv4(ipv4.Ipv4Packet(a, b, ipv4.PROTO_UDP, udp_bytes))
    flt = pfilter.Filter([pfilter.Rule(srcs=(ipaddress.ip_network("100.64.0.0/10"),),
                                       dsts=(pfilter.NetPortRange(ipaddress.ip_network("100.64.0.2/32"),
                                                                  pfilter.PortRange(443, 443)),))],
                         [ipaddress.ip_network("100.64.0.2/32")])
    odd = data[:1281] if len(data) > 1280 else data + b"\x01"
    cases: dict[str, Callable[[], object]] = {
        "checksum.checksum 1280 B": lambda: checksum.checksum(data),
        "checksum.checksum 1279 B (odd)": lambda: checksum.checksum(data[:1279]),
        "checksum.verify 20 B (IPv4 header)": lambda: checksum.verify(ip_bytes[:20]),
        "checksum.pseudo_header_sum v4": lambda: checksum.pseudo_header_sum(a, b, 6, 1260),
        "ipv4.parse_ipv4 1280 B": lambda: ipv4.parse_ipv4(ip_bytes),
        "ipv4.emit_ipv4 1280 B": lambda: ipv4.emit_ipv4(ipv4.Ipv4Packet(a, b, 6, tcp_bytes, ttl=64, ident=7)),
        "tcp.parse_segment 1260 B": lambda: tcpseg.parse_segment(tcp_bytes, a, b),
        "tcp.emit_segment 1228 B data": lambda: tcpseg.emit_segment(seg, a, b),
        "tcp.emit_segment ACK": lambda: tcpseg.emit_segment(ack, b, a),
        "tcp.TcpSegment(...) construct": lambda: tcpseg.TcpSegment(1, 2, 3, 4, 16, 5, timestamp=(1, 2),
                                                                  payload=data),
        "udp.parse_udp 1208 B": lambda: udp.parse_udp(udp_bytes, a, b),
        "udp.emit_udp 1200 B": lambda: udp.emit_udp(dgram, a, b),
        "filter.summarize TCP": lambda: pfilter.summarize(ip_bytes),
        "filter.run_in TCP data": lambda: flt.run_in(ip_bytes),
        "filter.run_in UDP (rule)": lambda: flt.run_in(udp_ip),
        "filter.run_out UDP": lambda: flt.run_out(udp_ip),
        "odd-length sanity": lambda: checksum.ones_sum(odd),
        "ip_packet(emit_segment) 1228 B data": lambda: ipv4.emit_ipv4(ipv4.Ipv4Packet(
            a, b, 6, tcpseg.emit_segment(seg, a, b), ttl=64, ident=7)),
    }
    one_step = getattr(tcpseg, "emit_ipv4_segment", None)  # issue 14; absent in older checkouts
    if one_step is not None:
        cases["tcp.emit_ipv4_segment 1228 B data"] = lambda: one_step(seg, a, b, 64, 7)
    return cases


def micro(seconds: float) -> None:
    """µs per call of each case: the best of repeated timeit runs (robust to other load)."""
    import timeit
    cases = micro_cases()
    best = dict.fromkeys(cases, float("inf"))
    number = 2000
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:  # interleaved rounds, so a burst of load hits all alike
        for name, fn in cases.items():
            best[name] = min(best[name], timeit.timeit(fn, number=number) / number)
    for name, t in best.items():
        print(f"  {name:40s} {t * 1e6:7.2f} µs")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--micro", type=float, metavar="SECONDS", default=None,
                    help="only the per-packet function micro-benchmarks, for about SECONDS")
    args = ap.parse_args()
    if args.micro is not None:
        print(f"command: {sys.executable} bench/netstack.py --micro {args.micro}  "
              f"(load {Path('/proc/loadavg').read_text().split()[0]})")
        micro(args.micro)
        return
    print(f"command: {sys.executable} bench/netstack.py --mib {args.mib} --idle {args.idle}")
    t0 = time.perf_counter()
    kk_up, kk_down = kernel_to_kernel(args.mib)
    up, down, rss, setup = pytsnet_flows(args.mib, args.idle)
    print(f"single flow, {args.mib} MiB each way (MTU 1280 TUN, through NetstackActor + TcpFlowActor):")
    print(f"  pytsnet -> kernel : {up:8.1f} Mbit/s")
    print(f"  kernel -> pytsnet : {down:8.1f} Mbit/s")
    print(f"  kernel <-> kernel over veth (the limit): {kk_up:8.1f} / {kk_down:8.1f} Mbit/s")
    print(f"idle connections: {args.idle} accepted in {setup:.1f} s, RSS +{rss:.1f} MiB "
          f"({rss * 1024 / max(args.idle, 1):.1f} KiB each)")
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
