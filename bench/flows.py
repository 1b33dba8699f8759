"""Many flows through the netstack actors: memory per idle flow, and fairness between active flows.

Run as root: ``.venv/bin/python bench/flows.py [--idle 10000] [--active 1000] [--seconds 20]``.
Same rig as ``bench/netstack.py`` (a TUN into a namespace, ``TunLinkActor`` + ``Netstack``, kernel
sockets on the other side), whose idle-connection measurement it reuses:

* idle: ``--idle`` kernel clients to a pytsnet listener, every one accepted by the app; RSS
  growth per flow (issue 14's done-when: <= 11 KiB).
* fairness: ``--active`` pytsnet connections to a kernel server, fed by one asyncio task per flow
  (``--feeder``); the kernel side's app, in a process of its own (``--counter``), counts each
  connection's bytes over the measured window (after a warm-up). Prints max/min per-flow
  throughput (done-when: <= 3) and Jain's fairness index; ``--diag`` and ``--sample`` say why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import ipaddress
import multiprocessing
import resource
import selectors
import socket
import statistics
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

from pytsnet.actors.runtime import ActorRef, ActorSystem, MailboxConfig, MailboxPolicy
from pytsnet.messages.netstack import LinkPacketOut, NetstackStatusRequest
from pytsnet.messages.wgengine import IpPacketOut
from pytsnet.net import Netstack
from pytsnet.net.link import TunLinkActor
from pytsnet.net.socket import SocketLike
from pytsnet.net.stream import TcpStream
from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.tcp.connection import TcpConnection
from pytsnet.testing.netns import Netns, isolated_netns
from pytsnet.testing.tun import open_tun

_spec = importlib.util.spec_from_file_location("bench_netstack", Path(__file__).with_name("netstack.py"))
assert _spec is not None and _spec.loader is not None
bench_netstack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_netstack)

KERNEL, STACK = bench_netstack.KERNEL, bench_netstack.STACK
CHUNK = 16 * 1024


def _count(srv: socket.socket, n: int, counts: Any, accepted: Any, stop: Any) -> None:
    """The kernel side's app: accept ``n`` connections on ``srv`` and count each one's bytes."""
    sel = selectors.DefaultSelector()
    srv.setblocking(False)
    sel.register(srv, selectors.EVENT_READ, None)
    buf = bytearray(1 << 16)
    while not stop.is_set():
        for key, _ in sel.select(0.2):
            if key.data is None:
                while accepted.value < n:
                    try:
                        c, _ = srv.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, accepted.value)
                    accepted.value += 1
                continue
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                got = sock.recv_into(buf)
            except BlockingIOError:
                continue
            if not got:
                sel.unregister(sock)
                sock.close()
            else:
                counts[key.data] += got
    sel.close()
    srv.close()


class KernelCounter:
    """A kernel server in ``ns`` that accepts ``n`` connections and counts each one's bytes.

    In a process of its own by default: the peer's app is not part of the system under test, and as
    a thread here it took the GIL from the stack (a ``recv_into`` per ready socket, each a GIL hand-
    off), and the TUN reader waited for it while the kernel's ACKs overflowed the TUN queue. ``thread``
    keeps the counter in this process, as before issue 14's fairness work."""

    def __init__(self, ns: Netns, port: int, n: int, where: str = "process") -> None:
        self.n = n
        srv = ns.call(lambda: socket.create_server((KERNEL, port), backlog=min(n, 4096)))
        if where == "process":
            ctx = multiprocessing.get_context("fork")
            self._counts: Any = ctx.Array("q", n, lock=False)
            self._accepted: Any = ctx.Value("i", 0, lock=False)
            self._stop: Any = ctx.Event()
            args = (srv, n, self._counts, self._accepted, self._stop)
            self._proc: Any = ctx.Process(target=_count, args=args, daemon=True)
            self._proc.start()
            srv.close()  # the child has it
        else:
            self._counts = [0] * n
            self._accepted = types.SimpleNamespace(value=0)
            self._stop = threading.Event()
            args = (srv, n, self._counts, self._accepted, self._stop)
            self._proc = threading.Thread(target=_count, args=args, daemon=True)
            self._proc.start()

    @property
    def accepted(self) -> int:
        return int(self._accepted.value)

    @property
    def counts(self) -> list[int]:
        return list(self._counts)

    def close(self) -> None:
        self._stop.set()
        self._proc.join(10)


def _conn(sock: object) -> TcpConnection | None:
    """The flow's sans-IO connection behind an app socket (diagnostics only: read racily)."""
    ref = sock._ch.ref  # type: ignore[attr-defined]
    actor = ref._cell.actor if ref is not None else None
    return getattr(actor, "conn", None)


def diagnose(ns: Netns, socks: list[object], rates: list[float], link: ActorRef, net: Netstack,
             now: float) -> None:
    """Per-connection counters: totals, the slowest flows' state, where packets were dropped."""
    conns = [_conn(s) for s in socks]
    live = [c for c in conns if c is not None]
    tot = {k: sum(getattr(c, k, 0) for c in live) for k in
           ("rto_expiries", "tail_loss_probes", "fast_recoveries", "retransmitted_segments", "spurious_rtos",
            "local_congestion_signals",
            "spurious_recoveries")}
    print(f"  totals over {len(live)} flows: {tot}")
    print(f"  link mailbox dropped {link.dropped}, backlog {link.backlog()}; "
          f"netstack dropped {net.ref.dropped}, backlog {net.ref.backlog()}")
    status = net.ref.ask(NetstackStatusRequest())
    print(f"  stack drops {status.drops}")
    print("  " + " ".join(ns.sh("ip -s link show dev $(ls /sys/class/net | grep tun) | tail -4").split()))
    nstat = ("nstat -az 2>/dev/null | grep -Ei 'drop|prune|collapse|ofo|overflow|InErrs|RetransSegs|InSegs'"
             " | awk '$2 != 0 {print $1\"=\"$2}'")
    print("  kernel: " + " ".join(ns.sh(nstat).split()))
    order = sorted(range(len(rates)), key=lambda i: rates[i])
    for label, idx in (("slowest", order[:5]), ("fastest", order[-3:])):
        for i in idx:
            c = conns[i]
            if c is None:
                continue
            rto_in = None if c._rto_at is None else round(c._rto_at - now, 3)
            ref = socks[i]._ch.ref  # type: ignore[attr-defined]
            cell = ref._cell if ref is not None else None
            actor = cell.actor if cell is not None else None
            if cell is not None and actor is not None:
                h = actor._timer
                print(f"  {label} flow {i} actor: timer_at "
                      f"{None if actor._timer_at is None else round(actor._timer_at - now, 3)} handle "
                      f"{None if h is None else (round(h.deadline - now, 3), h.cancelled, h in cell.timers)} "
                      f"mailbox {len(cell.mailbox)} scheduled {cell.scheduled} status {cell.status}")
                if h is not None and h.deadline < now - 1:
                    heap = cell.system.scheduler._heap._heap
                    pos = [k for k, e in enumerate(heap) if e[2] is h]
                    nans = sum(1 for e in heap if e[0] != e[0])
                    thread = cell.system.scheduler._thread
                    print(f"    overdue timer: in heap at {pos} of {len(heap)}, head "
                          f"{heap[0][0] - now if heap else None}, NaN deadlines {nans}, timer thread alive "
                          f"{thread.is_alive() if thread else None}")
            print(f"  {label} flow {i}: {rates[i] * 1000:.1f} kbit/s, state {c.state.value}, una "
                  f"{c._snd_una} nxt {c._snd_nxt} max {c._snd_max} buf {c.send_buffered} wnd {c._snd_wnd}, "
                  f"cwnd "
                  f"{c._cc.cwnd} ssthresh {c._cc.ssthresh} rec {c._cc.in_recovery}, srtt "
                  f"{c._rtt.srtt} rto {c._rtt.rto:.3f} backoff {c._rtt.backoff_count} rto_in {rto_in} "
                  f"tlp_at {c._tlp_at} retries {c._retries}; rtos {c.rto_expiries} tlps "
                  f"{c.tail_loss_probes} recov {c.fast_recoveries} rexmit {c.retransmitted_segments} "
                  f"spurious rto {getattr(c, 'spurious_rtos', None)} "
                  f"pace_wait {getattr(c, '_pace_wait', None)} "
                  f"local {getattr(c, 'local_congestion_signals', None)} now {now:.3f}")


class Sampler:
    """Every ``period`` s, each flow's acked bytes, cwnd, ssthresh, SRTT and congestion counters (read
    racily from the flows' connections: diagnostics only), to see when fast flows pull away."""

    def __init__(self, socks: list[SocketLike], period: float = 1.0) -> None:
        self.conns = [_conn(s) for s in socks]
        self.period = period
        self.rows: list[tuple[float, list[tuple[int, int, int, float, int, int, int]]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.wait(self.period):
            row = []
            for c in self.conns:
                if c is None:
                    row.append((0, 0, 0, 0.0, 0, 0, 0))
                    continue
                row.append((c._snd_una, c._cc.cwnd, min(c._cc.ssthresh, 1 << 30), c._rtt.srtt or 0.0,
                            c.local_congestion_signals, c.rto_expiries, c.fast_recoveries))
            self.rows.append((time.monotonic() - t0, row))

    def report(self, rates: list[float]) -> None:
        self.stop.set()
        self.thread.join(5)
        order = sorted(range(len(rates)), key=lambda i: rates[i])
        for t, row in self.rows[::2]:
            ss = sum(1 for r in row if r[1] < r[2])
            cw = sorted(r[1] for r in row)
            print(f"  t={t:5.1f}s slow start {ss}, cwnd p10/p50/p90 {cw[len(cw) // 10]}/{cw[len(cw) // 2]}/"
                  f"{cw[9 * len(cw) // 10]}")
        for label, idx in (("slowest", order[:3]), ("fastest", order[-3:])):
            for i in idx:
                print(f"  {label} flow {i} ({rates[i] * 1000:.1f} kbit/s): " + " ".join(
                    f"[{t:.0f}s {r[i][0] // 1000}k c{r[i][1] // 1000}k s{min(r[i][2], 999999) // 1000}k "
                    f"{r[i][3]:.2f} L{r[i][4]} R{r[i][5]} F{r[i][6]}]" for t, r in self.rows[::3]))


async def _async_app(socks: list[SocketLike], chunk: bytes, stop: threading.Event) -> None:
    """The app as a real one is: one task per flow that writes and, when the send buffer is full,
    waits until the flow took some (``TcpStream.send``), on one event loop thread."""
    streams = [TcpStream(s._ch) for s in socks]

    async def feed(stream: TcpStream) -> None:
        while True:
            await stream.send(chunk)

    tasks = [asyncio.create_task(feed(st)) for st in streams]
    while not stop.is_set():
        await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def fairness(ns: Netns, net: Netstack, active: int, seconds: float, warmup: float,
             link: ActorRef | None = None, feeder: str = "async", sample: bool = False,
             counter_in: str = "process") -> dict[str, float]:
    """Per-flow throughput of ``active`` concurrent pytsnet -> kernel flows over ``seconds``."""
    counter = KernelCounter(ns, 9300, active, counter_in)
    socks = [net.create_connection((KERNEL, 9300), timeout=60) for _ in range(active)]
    deadline = time.monotonic() + 60
    while counter.accepted < active:
        assert time.monotonic() < deadline, f"only {counter.accepted} of {active} accepted"
        time.sleep(0.05)
    chunk = b"\x5a" * CHUNK
    stop = threading.Event()
    if feeder == "spin":
        for s in socks:
            s.settimeout(0.0)  # never block: the app offers data to every flow in turn

        def app() -> None:
            while not stop.is_set():
                for s in socks:
                    with contextlib.suppress(TimeoutError):  # buffers full: its turn next round
                        s.send(chunk)

        t = threading.Thread(target=app, daemon=True)
    else:
        t = threading.Thread(target=asyncio.run, args=(_async_app(socks, chunk, stop),), daemon=True)
    t.start()
    sampler = Sampler(socks) if sample else None
    time.sleep(warmup)
    before = list(counter.counts)
    t0 = time.monotonic()
    time.sleep(seconds)
    after = list(counter.counts)
    elapsed = time.monotonic() - t0
    rates = [(a - b) * 8 / elapsed / 1e6 for a, b in zip(after, before, strict=True)]
    if link is not None:
        diagnose(ns, list(socks), rates, link, net, time.monotonic())
    if sampler is not None:
        sampler.report(rates)
    stop.set()
    t.join(30)
    for s in socks:
        s.close()
    counter.close()
    lo, hi = min(rates), max(rates)
    jain = sum(rates) ** 2 / (len(rates) * sum(r * r for r in rates)) if any(rates) else 0.0
    return {"aggregate": sum(rates), "min": lo, "median": statistics.median(rates), "max": hi,
            "max_over_min": hi / lo if lo > 0 else float("inf"), "jain": jain,
            "stalled": sum(1 for r in rates if r == 0)}


def link_mailbox(depth: int) -> MailboxConfig:
    """The TUN link's queue: ``depth`` packets, drop-tail as a NIC queue; 0 for the old blocking 65,536."""
    return MailboxConfig(depth, MailboxPolicy.DROP_NEWEST) if depth > 0 else MailboxConfig(65536)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--active", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--send-buffer", type=int, default=64 * 1024,
                    help="per-flow send buffer for the active flows (bounds memory: 1,000 x this)")
    ap.add_argument("--link-queue", type=int, default=0,
                    help="packets the TUN link queues before dropping (as a NIC's txqueuelen); 0: a 65,536 "
                         "deep mailbox that blocks the senders instead")
    ap.add_argument("--diag", action="store_true",
                    help="print per-connection counters and the slowest flows' state after the window")
    ap.add_argument("--sample", action="store_true",
                    help="sample every flow's cwnd/SRTT each second; print how the extremes got there")
    ap.add_argument("--cc", choices=("cubic", "newreno"), default=None,
                    help="congestion control of the active flows (default: StackConfig's)")
    ap.add_argument("--feeder", choices=("async", "spin"), default="async",
                    help="the app: one asyncio task per flow that waits for room (default), or one thread "
                         "that offers data to every flow in turn without blocking (before 14k)")
    ap.add_argument("--link-out", choices=("burst", "packet"), default="burst",
                    help="how flows hand packets to the TUN link: one message per emit (default) or one "
                         "per packet (before 14k)")
    ap.add_argument("--txqueuelen", type=int, default=0,
                    help="the TUN's transmit queue (kernel -> pytsnet) in packets; 0: the kernel's 500")
    ap.add_argument("--counter", choices=("process", "thread"), default="process",
                    help="the kernel side's counting app in a process of its own (default) or a thread of "
                         "the bench's (before 14m: it shared the stack's GIL)")
    ap.add_argument("--tun-read", choices=("held", "os"), default="held",
                    help="the TUN link drains a burst under one GIL hold (default) or os.read per packet")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval for this process (the GIL hand-off; CPython's default 0.005)")
    args = ap.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    print(f"command: {sys.executable} bench/flows.py --idle {args.idle} --active {args.active} "
          f"--seconds {args.seconds}" + (f" --cc {args.cc}" if args.cc else "")
          + f" --feeder {args.feeder} --link-out {args.link_out}"
          + (f" --txqueuelen {args.txqueuelen}" if args.txqueuelen else "")
          + (f" --tun-read {args.tun_read}" if args.tun_read != "held" else "")
          + (f" --counter {args.counter}" if args.counter != "process" else "")
          + (f" --switch-interval {args.switch_interval}" if args.switch_interval is not None else ""))
    with open("/proc/loadavg") as f:
        print(f"load average before: {f.read().split()[0]}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * (args.idle + args.active) + 1000
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, want)), hard))
    for what in ("idle", "active"):
        n = args.idle if what == "idle" else args.active
        if n <= 0:
            continue
        with isolated_netns("bfl") as ns:
            tun = open_tun(ns, local=KERNEL, peer=STACK)
            if args.txqueuelen:
                ns.sh(f"ip link set dev {tun.name} txqueuelen {args.txqueuelen}")
            system = ActorSystem("bench-flows", pool_workers=2)
            try:
                held = {} if args.tun_read == "held" else {"hold_gil": False}
                link = system.spawn(TunLinkActor, tun.fd, "netstack", name="tun-link",
                                    mailbox=link_mailbox(args.link_queue), **held)
                addrs = (ipaddress.ip_address(STACK),)
                cap = max(16384, n + 16)
                cfg = (StackConfig(addresses=addrs, max_tcp_connections=cap) if what == "idle" else
                       StackConfig(addresses=addrs, max_tcp_connections=cap, send_buffer=args.send_buffer,
                                   **({"congestion_control": args.cc} if args.cc else {})))
                out = IpPacketOut if args.link_out == "burst" else LinkPacketOut
                net = Netstack.start(system, cfg, link, out_message=out)
                if what == "idle":
                    rss, setup = bench_netstack.idle_connections(ns, net, n)
                    print(f"idle flows: {n} accepted in {setup:.1f} s, RSS +{rss:.1f} MiB "
                          f"({rss * 1024 / n:.2f} KiB each)", flush=True)
                else:
                    r = fairness(ns, net, n, args.seconds, args.warmup, link if args.diag else None,
                                 args.feeder, args.sample, args.counter)
                    print(f"active flows: {n} pytsnet -> kernel for {args.seconds:.0f} s: aggregate "
                          f"{r['aggregate']:.1f} Mbit/s, per flow min {r['min'] * 1000:.1f} / median "
                          f"{r['median'] * 1000:.1f} / max {r['max'] * 1000:.1f} kbit/s, max/min "
                          f"{r['max_over_min']:.2f}, Jain {r['jain']:.3f}, stalled {r['stalled']:.0f}",
                          flush=True)
            finally:
                system.shutdown(30)
                tun.close()
    with open("/proc/loadavg") as f:
        print(f"load average after: {f.read().split()[0]}")


if __name__ == "__main__":
    main()
