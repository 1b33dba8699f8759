"""Benchmark the exit node's TCP forwarder against the host's own socket, in one run.

Usage (root): ``.venv/bin/python bench/forwarder.py [--mib 32] [--runs 3]``.
In ``pytsnet.testing.exitlab``: "direct" is a kernel socket in the exit namespace itself uploading
to the internet namespace's echo-less sink (the forwarder's host leg alone); "forwarded" is a kernel
client in the client namespace whose packets reach our netstack through a TUN and leave through a
``TcpForwarder``'s host socket (``tun_router``: netstack + forwarder, no WireGuard). Prints MB/s
(medians) with the load average: the ratio is the forwarder's cost, the absolute numbers move with
the shared machine's load.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from pytsnet.netstack.forward import ForwardPolicy
from pytsnet.testing.exitlab import INTERNET_ADDR, exit_lab, tun_router

SINK_PORT = 7100


def _sink(ready: threading.Event, stop: threading.Event) -> None:
    srv = socket.create_server((INTERNET_ADDR, SINK_PORT))
    srv.settimeout(0.5)
    ready.set()
    while not stop.is_set():
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            continue
        with conn:
            n = 0
            while chunk := conn.recv(1 << 20):
                n += len(chunk)
            conn.sendall(str(n).encode())
    srv.close()


def _upload(nbytes: int) -> float:
    block = b"\x5a" * (256 * 1024)
    t0 = time.perf_counter()
    with socket.create_connection((INTERNET_ADDR, SINK_PORT), timeout=60) as c:
        left = nbytes
        while left > 0:
            c.sendall(block[:min(left, len(block))])
            left -= min(left, len(block))
        c.shutdown(socket.SHUT_WR)
        got = int(c.recv(64) or b"0")
    dt = time.perf_counter() - t0
    if got != nbytes:
        raise RuntimeError(f"sink got {got} of {nbytes} bytes")
    return nbytes / dt / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    nbytes = args.mib << 20
    with tempfile.TemporaryDirectory() as tmp, exit_lab(Path(tmp), prefix="xb") as lab:
        ready, stop = threading.Event(), threading.Event()
        server = threading.Thread(target=lambda: lab.internet.call(lambda: _sink(ready, stop)), daemon=True)
        server.start()
        ready.wait(10)
        direct: list[float] = []
        forwarded: list[float] = []
        with tun_router(lab, ForwardPolicy(exit_node=True)):
            for _ in range(args.runs):  # interleaved: both see the same minutes of load
                direct.append(lab.exit.call(lambda: _upload(nbytes)))
                forwarded.append(lab.client.call(lambda: _upload(nbytes)))
        stop.set()
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(f"upload {args.mib} MiB x{args.runs}, load {' '.join(load)}")
        print(f"  direct (exit namespace's own socket): {statistics.median(direct):8.1f} MB/s  {direct}")
        print(f"  forwarded (TUN -> netstack -> TcpForwarder): {statistics.median(forwarded):8.1f} MB/s  "
              f"{[round(x, 1) for x in forwarded]}")


if __name__ == "__main__":
    main()
