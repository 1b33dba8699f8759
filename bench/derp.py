"""Benchmark the DERP relay: packets/s and MB/s delivered between two clients on loopback.

Usage: ``.venv/bin/python bench/derp.py [--seconds 4] [--sizes 1200,16384]``. The relay runs in a
child process (its own interpreter, as in production); in this process client A floods SendPacket
frames at client B, which counts the RecvPacket frames it gets. Reported: delivered packets/s and
payload MB/s at B, and how many packets the relay dropped (sent - delivered: its bounded queues
shed load when A outruns B).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time

from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.handshake import ClientConnection, ServerInfoReceived
from pytsnet.wire.derp.reader import FrameReader
from pytsnet.wire.keys import NodePrivate

from pytsnet.localnet.derp_server import DerpServer


def _serve(conn: mp.connection.Connection) -> None:  # type: ignore[name-defined]
    async def main() -> None:
        s = DerpServer()
        await s.start()
        conn.send(s.port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until the parent says stop
        conn.send((s.stats.packets_forwarded, dict(s.stats.drops)))
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


async def _run(port: int, size: int, seconds: float) -> tuple[int, int, float]:
    _ra, wa, _ca = await _connect(port)
    rb, wb, cb = await _connect(port)
    frame = f.encode(f.SendPacket(cb.public, b"\x00" * size))
    batch = frame * max(1, (256 << 10) // len(frame))
    per_batch = len(batch) // len(frame)
    sent = received = 0
    stop = False

    async def send() -> None:
        nonlocal sent
        while not stop:
            wa.write(batch)
            sent += per_batch
            await wa.drain()

    async def recv() -> None:
        nonlocal received
        reader = FrameReader()
        while True:
            data = await rb.read(1 << 20)
            if not data:
                return
            received += sum(1 for t, _ in reader.feed_raw(data) if t == f.FrameType.RECV_PACKET)

    rt = asyncio.ensure_future(recv())
    st = asyncio.ensure_future(send())
    await asyncio.sleep(0.5)  # warm-up
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--sizes", default="1200,16384")
    args = ap.parse_args()
    print("$ " + " ".join([".venv/bin/python", *sys.argv]))
    for size in (int(s) for s in args.sizes.split(",")):
        parent, child = mp.Pipe()
        proc = mp.Process(target=_serve, args=(child,), daemon=True)
        proc.start()
        port = parent.recv()
        sent, received, pps = asyncio.run(_run(port, size, args.seconds))
        parent.send("stop")
        forwarded, drops = parent.recv()
        proc.join(5)
        print(f"payload {size:6d} B: {pps:10,.0f} packets/s  {pps * size / 1e6:8.1f} MB/s delivered  "
              f"(sent {sent:,}, delivered {received:,}, relay forwarded {forwarded:,}, drops {drops})")


if __name__ == "__main__":
    main()
