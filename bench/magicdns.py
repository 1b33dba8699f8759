"""Benchmark MagicDNS: queries/s of the resolver core, the ``dns`` actor and quad-100 end to end.

(Not ``bench/dns.py``: a script of that name would shadow dnspython's ``dns`` package on its own path.)

Usage: ``.venv/bin/python bench/magicdns.py [--seconds 3] [--window 32]``.

* ``core``: ``wire.dns.Resolver.handle`` on a 100-peer config (parse, answer, emit with dnspython).
* ``actor``: ``DnsQuery`` asks to a running device's ``dns`` actor (what ``dev.lookup`` and DoH cost),
  one at a time.
* ``quad100-udp``: an app's UDP socket on the device sending queries to 100.100.100.100:53 through its
  netstack, the engine's hand-off and the resolver's own stack, ``--window`` in flight.
* ``quad100-tcp``: one TCP connection to 100.100.100.100:53, queries pipelined ``--window`` deep.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import tempfile
import time
from pathlib import Path

import anyio
import dns.message

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet import LocalTailnet
from pytsnet.messages.dns import DnsQuery
from pytsnet.wire.dns import Resolver, ResolverConfig

SERVICE = ("100.100.100.100", 53)


def bench_core(seconds: float) -> float:
    hosts = {f"node{i}.localnet.ts.net": (ipaddress.IPv4Address(f"100.64.{i // 250}.{i % 250 + 1}"),)
             for i in range(100)}
    r = Resolver(ResolverConfig(hosts=hosts, authoritative=("localnet.ts.net",), search=("localnet.ts.net",)))
    queries = [dns.message.make_query(f"node{i}", "A").to_wire() for i in range(100)]
    n, t0 = 0, time.perf_counter()
    while (el := time.perf_counter() - t0) < seconds:
        for q in queries:
            r.handle(q)
        n += len(queries)
    return n / el


def bench_actor(dev: ActorDevice, seconds: float) -> float:
    assert dev.system is not None
    ref = dev.system.lookup("dns")
    assert ref is not None
    q = dns.message.make_query("bench", "A").to_wire()
    n, t0 = 0, time.perf_counter()
    while (el := time.perf_counter() - t0) < seconds:
        ref.ask(DnsQuery(query=q, transport="local"), timeout=5)
        n += 1
    return n / el


async def bench_udp(dev: ActorDevice, seconds: float, window: int) -> float:
    sock = await dev.listen_packet()
    q = dns.message.make_query("bench", "A").to_wire()
    n, t0 = 0, time.perf_counter()
    while (el := time.perf_counter() - t0) < seconds:
        for _ in range(window):
            await sock.sendto(q, SERVICE)
        for _ in range(window):
            with anyio.fail_after(5):
                await sock.recvfrom()
        n += window
    await sock.aclose()
    return n / el


async def bench_tcp(dev: ActorDevice, seconds: float, window: int) -> float:
    stream = await dev.tcp_connect(*SERVICE)
    q = dns.message.make_query("bench", "A").to_wire()
    framed = len(q).to_bytes(2, "big") + q
    n, t0 = 0, time.perf_counter()
    buf = b""
    while (el := time.perf_counter() - t0) < seconds:
        await stream.send(framed * window)
        got = 0
        while got < window:
            buf += await stream.receive()
            while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                buf = buf[2 + int.from_bytes(buf[:2], "big"):]
                got += 1
        n += window
    await stream.aclose()
    return n / el


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--window", type=int, default=32)
    args = ap.parse_args()
    print(f"loadavg {Path('/proc/loadavg').read_text().split()[:3]} cpus {os.cpu_count()}")
    print(f"core          {bench_core(args.seconds):10.0f} queries/s")
    with tempfile.TemporaryDirectory() as tmp, LocalTailnet(Path(tmp) / "ctl", listen="127.0.0.1:0") as net:
        dev = ActorDevice(Config(dir=Path(tmp) / "bench", hostname="bench", auth_key=net.create_authkey(),
                                 control_url=net.control_url, bind_host="127.0.0.1")).start()
        try:
            dev.wait_until_running_blocking(30)
            print(f"actor         {bench_actor(dev, args.seconds):10.0f} queries/s")
            print(f"quad100-udp   {anyio.run(bench_udp, dev, args.seconds, args.window):10.0f} queries/s "
                  f"(window {args.window})")
            print(f"quad100-tcp   {anyio.run(bench_tcp, dev, args.seconds, args.window):10.0f} queries/s "
                  f"(window {args.window})")
            c = dev.status().counters
            print(f"dns counters: queries {c.get('dns_queries')} answers {c.get('dns_answers')}")
        finally:
            dev.close()


if __name__ == "__main__":
    main()
