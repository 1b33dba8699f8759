"""Benchmark the DERP relay: packets/s and MB/s delivered between two clients on loopback.

Usage: ``.venv/bin/python bench/derp.py [--seconds 4] [--sizes 1200,16384] [--window 32]``. The relay
runs in a child process (its own interpreter, as in production); in this process client A sends
SendPacket frames to client B, which counts the RecvPacket frames it gets. A keeps at most
``--window`` packets in flight (sent and not yet received by B; default: the relay's per-client queue
depth), the way a transport with flow control would, so the number is the rate the relay *delivers*
rather than how fast A can fill a queue that then sheds load. ``--window 0`` floods without limit
(the relay's bounded queues drop the excess; the drops are reported). ``bench/localnet.py`` imports
:func:`run_sizes` to print the same numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass

from pytsnet.localnet.derp_server import PER_CLIENT_SEND_QUEUE_DEPTH, DerpServer
from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.handshake import ClientConnection, ServerInfoReceived
from pytsnet.wire.derp.reader import FrameReader
from pytsnet.wire.keys import NodePrivate

WARMUP = 0.5


@dataclass
class Result:
    size: int
    window: int
    pps: float  # delivered packets/s at B over the measured interval
    sent: int
    delivered: int
    forwarded: int  # relay's own count
    drops: dict[str, int]
    relay_cpu_s: float = 0.0  # the relay process's CPU (user + system) over the whole run

    @property
    def relay_us_per_packet(self) -> float:
        return self.relay_cpu_s / self.forwarded * 1e6 if self.forwarded else 0.0

    @property
    def mbps(self) -> float:
        return self.pps * self.size / 1e6

    def line(self) -> str:
        w = "unbounded" if self.window <= 0 else str(self.window)
        return (f"payload {self.size:6d} B, window {w:>9}: {self.pps:10,.0f} packets/s {self.mbps:8.1f} MB/s "
                f"delivered  (sent {self.sent:,}, delivered {self.delivered:,}, relay forwarded "
                f"{self.forwarded:,}, drops {self.drops or 0}; relay CPU {self.relay_us_per_packet:.1f} µs "
                "per packet)")


def _serve(conn: mp.connection.Connection) -> None:  # type: ignore[name-defined]
    async def main() -> None:
        s = DerpServer()
        await s.start()
        t0 = os.times()
        cpu0 = t0.user + t0.system
        conn.send(s.port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until the parent says stop
        t = os.times()
        conn.send((s.stats.packets_forwarded, dict(s.stats.drops), t.user + t.system - cpu0))
        await s.close()

    asyncio.run(main())


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ClientConnection]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /derp HTTP/1.1\r\nHost: bench\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
    await r.readuntil(b"\r\n\r\n")
    c = ClientConnection(NodePrivate.generate(), time.monotonic())
    while c.server_info is None:
        data = await r.read(1 << 16)
        evs = c.receive_data(data, time.monotonic())
        w.write(c.data_to_send())
        if any(isinstance(e, ServerInfoReceived) for e in evs):
            break
    return r, w, c


async def _run(port: int, size: int, seconds: float, window: int) -> tuple[int, int, float]:
    _ra, wa, _ca = await _connect(port)
    rb, wb, cb = await _connect(port)
    frame = f.encode(f.SendPacket(cb.public, b"\x00" * size))
    flood = frame * max(1, (256 << 10) // len(frame))
    sent = received = written_off = 0  # written_off: in-flight packets given up on after a stall
    stop = False
    progress = asyncio.Event()

    async def send() -> None:
        nonlocal sent, written_off
        while not stop:
            if window <= 0:
                wa.write(flood)
                sent += len(flood) // len(frame)
            else:
                room = window - (sent - received - written_off)
                if room <= 0:
                    progress.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(progress.wait(), 1.0)
                    if not progress.is_set():  # nothing arrived for 1 s: the window was dropped
                        written_off = sent - received
                    continue
                wa.write(frame * room)
                sent += room
            await wa.drain()

    async def recv() -> None:
        nonlocal received
        reader = FrameReader()
        while True:
            data = await rb.read(1 << 20)
            if not data:
                return
            received += sum(1 for t, _ in reader.feed_raw(data) if t == f.FrameType.RECV_PACKET)
            progress.set()

    rt = asyncio.ensure_future(recv())
    st = asyncio.ensure_future(send())
    await asyncio.sleep(WARMUP)
    r0, t0 = received, time.perf_counter()
    await asyncio.sleep(seconds)
    r1, t1 = received, time.perf_counter()
    stop = True
    await st
    await asyncio.sleep(0.3)
    rt.cancel()
    wa.close()
    wb.close()
    return sent, received, (r1 - r0) / (t1 - t0)


def run_size(size: int, seconds: float, window: int = PER_CLIENT_SEND_QUEUE_DEPTH) -> Result:
    """One measurement with a fresh relay process."""
    parent, child = mp.Pipe()
    proc = mp.Process(target=_serve, args=(child,), daemon=True)
    proc.start()
    port = parent.recv()
    sent, received, pps = asyncio.run(_run(port, size, seconds, window))
    parent.send("stop")
    forwarded, drops, cpu = parent.recv()
    proc.join(5)
    return Result(size, window, pps, sent, received, forwarded, drops, cpu)


def run_sizes(sizes: list[int], seconds: float, window: int = PER_CLIENT_SEND_QUEUE_DEPTH) -> list[Result]:
    """Measure and print one line per payload size."""
    results = []
    for size in sizes:
        results.append(run_size(size, seconds, window))
        print(results[-1].line(), flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--sizes", default="1200,16384")
    ap.add_argument("--window", type=int, default=PER_CLIENT_SEND_QUEUE_DEPTH,
                    help="packets in flight from A to B (0: flood without limit)")
    args = ap.parse_args()
    print("$ " + " ".join([".venv/bin/python", *sys.argv]))
    run_sizes([int(s) for s in args.sizes.split(",")], args.seconds, args.window)


if __name__ == "__main__":
    main()
