"""Benchmark: a Python node's TCP through a Python exit node vs to that exit node directly, one run.

Usage (root): ``.venv/bin/python bench/exit_node.py [--mib 16] [--runs 3]``.
In the exit lab (``pytsnet.testing.exitlab``, a local tailnet in its hub): A (this process, client
namespace) uploads over WireGuard to B (its own process, exit namespace). "direct" ends at a sink on
B's tailnet address (B's netstack hands the bytes to B's app); "exit node" goes A -> B -> the
internet namespace's kernel sink (B's netstack hands them to a ``TcpForwarder``, whose host socket
sends them one router hop on). Runs alternate, so both see the same minutes of load. Prints MB/s
(medians), the ratio, and the load average: the ratio is what matters on this shared machine.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytsnet.testing.exitlab import INTERNET_ADDR
from pytsnet.testing.exitnet import exit_tailnet, upload
from pytsnet.testing.polling import wait_until

KERNEL_SINK, TAILNET_SINK = 7100, 7200


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    nbytes = args.mib << 20
    with tempfile.TemporaryDirectory() as tmp, exit_tailnet(Path(tmp), prefix="xb") as w:
        w.lab.internet.popen([sys.executable, "-m", "pytsnet.testing.exitnet", "sink", INTERNET_ADDR,
                              str(KERNEL_SINK)], stdout=subprocess.DEVNULL)
        b = w.node_process(w.lab.exit, "exit-b", sink_port=TAILNET_SINK, advertise_exit_node=True)
        a = w.device(w.lab.client, "client")
        w.approve_exit("exit-b")
        wait_until(lambda: a.set_exit_node_blocking("exit-b") is not None, 20, "B engaged")

        def kernel_sink_up() -> bool:
            try:
                w.lab.internet.call(lambda: socket.create_connection((INTERNET_ADDR, KERNEL_SINK), 1).close())
                return True
            except OSError:
                return False
        wait_until(kernel_sink_up, 20, "kernel sink")
        def to_b() -> object:
            return a.tcp_connect_blocking(b.address, TAILNET_SINK, timeout=30)

        def through_b() -> object:
            return a.tcp_connect_blocking(INTERNET_ADDR, KERNEL_SINK, timeout=30)

        upload(to_b, 1 << 20)  # warm up (handshake, first flow)
        upload(through_b, 1 << 20)
        direct: list[float] = []
        exit_: list[float] = []
        t0 = time.monotonic()
        for _ in range(args.runs):
            direct.append(upload(to_b, nbytes))
            exit_.append(upload(through_b, nbytes))
        load = Path("/proc/loadavg").read_text().split()[:3]
        d, e = statistics.median(direct), statistics.median(exit_)
        print(f"upload {args.mib} MiB x{args.runs} (alternating, {time.monotonic() - t0:.0f} s), "
              f"load {' '.join(load)}")
        print(f"  direct    A -> B's tailnet sink:          {d:7.2f} MB/s  {[round(x, 2) for x in direct]}")
        print(f"  exit node A -> B -> internet kernel sink: {e:7.2f} MB/s  {[round(x, 2) for x in exit_]}")
        print(f"  exit node / direct: {e / d:.2f}")


if __name__ == "__main__":
    main()
