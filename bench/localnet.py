"""Benchmark the embedded local tailnet: registration time and DERP relay throughput.

Usage: ``.venv/bin/python bench/localnet.py [--nodes 100] [--derp-seconds 3] [--derp-sizes 1200,16384]``.
Control: each node is a fresh machine key doing the full path a Go node does (GET /key, Noise upgrade,
HTTP/2 register with a reusable pre-auth key), one after another; then one more node's first map
(with N peers) is timed. DERP: packets/s and MB/s delivered between two clients on loopback, measured
by ``bench/derp.py`` (imported, windowed sender; see there).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.testclient import ControlClient

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is scripts, not a package
import derp as derp_bench  # bench/derp.py, found through the path above


async def _run(net: LocalTailnet, n: int) -> tuple[float, float]:
    key = net.create_authkey(reusable=True)
    t0 = time.perf_counter()
    for i in range(n):
        c = ControlClient(net.control_url)
        await c.connect()
        r = await c.register(key, hostname=f"bench{i}")
        assert r.get("MachineAuthorized"), r
        await c.close()
    reg = time.perf_counter() - t0
    c = ControlClient(net.control_url)
    await c.connect()
    await c.register(key, hostname="reader")
    t1 = time.perf_counter()
    async for msg in c.map_stream():
        assert len(msg["Peers"]) == n
        break
    first_map = time.perf_counter() - t1
    await c.close()
    return reg, first_map


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--derp-seconds", type=float, default=3.0)
    ap.add_argument("--derp-sizes", default="1200,16384")
    ap.add_argument("--derp-window", type=int, default=derp_bench.PER_CLIENT_SEND_QUEUE_DEPTH)
    args = ap.parse_args()
    print("$ " + " ".join([".venv/bin/python", *sys.argv]))
    print("DERP relay, two clients on loopback:", flush=True)
    derp_bench.run_sizes([int(x) for x in args.derp_sizes.split(",")], args.derp_seconds, args.derp_window)
    with tempfile.TemporaryDirectory() as d, LocalTailnet(d) as net:
        reg, first_map = asyncio.run(_run(net, args.nodes))
    print(f"registered {args.nodes} nodes in {reg:.2f} s ({args.nodes / reg:.0f} registrations/s, "
          f"each with its own Noise connection)")
    print(f"first map with {args.nodes} peers: {first_map * 1000:.1f} ms")


if __name__ == "__main__":
    main()
