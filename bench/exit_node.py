"""Benchmark: a Python node's TCP through a Python exit node vs to that exit node directly, one run.

Usage (root): ``.venv/bin/python bench/exit_node.py [--mib 16] [--runs 3]``.
In the exit lab (``pytsnet.testing.exitlab``, a local tailnet in its hub): A (this process, client
namespace) uploads over WireGuard to B (its own process, exit namespace). "to B" ends at a sink on
B's tailnet address (B's netstack hands the bytes to B's app); "through B" goes A -> B -> the
internet namespace's kernel sink (B's netstack hands them to a ``TcpForwarder``, whose host socket
sends them one router hop on). Runs alternate, so both see the same minutes of load. Prints MB/s
(medians), the ratio, and the load average: the ratio is what matters on this shared machine.
``--path direct`` (default) lets the hub forward between the two nodes' LANs (the lab's hub forwards
nothing otherwise; it has no route to the internet either, so nothing can leave but through B) and
waits for disco's direct UDP path; ``--path derp`` keeps the lab as the tests use it (A reaches B
only through the hub's DERP relay).
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

from pytsnet.testing.exitlab import CLIENT_HUB_SIDE, EXIT_HUB_SIDE, HUB_ADDR, HUB_CLIENT_SIDE, INTERNET_ADDR
from pytsnet.testing.exitnet import exit_tailnet, upload
from pytsnet.testing.polling import wait_until

KERNEL_SINK, TAILNET_SINK = 7100, 7200


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--path", choices=["direct", "derp"], default="direct")
    args = ap.parse_args()
    nbytes = args.mib << 20
    with tempfile.TemporaryDirectory() as tmp, exit_tailnet(Path(tmp), prefix="xb") as w:
        w.lab.internet.popen([sys.executable, "-m", "pytsnet.testing.exitnet", "sink", INTERNET_ADDR,
                              str(KERNEL_SINK)], stdout=subprocess.DEVNULL)
        direct = args.path == "direct"
        if direct:
            w.lab.hub.sh("sysctl -qw net.ipv4.ip_forward=1")
            w.lab.client.sh(f"ip route add {EXIT_HUB_SIDE}/32 via {HUB_CLIENT_SIDE}")
            w.lab.exit.sh(f"ip route add {CLIENT_HUB_SIDE}/32 via {HUB_ADDR}")
        b = w.node_process(w.lab.exit, "exit-b", sink_port=TAILNET_SINK, advertise_exit_node=True,
                           advertise_endpoints=direct)
        a = w.device(w.lab.client, "client", advertise_endpoints=direct)
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
        deadline = time.monotonic() + 20
        while direct and a.status().peers[0].path != "direct" and time.monotonic() < deadline:
            upload(to_b, 1 << 20)
        path = a.status().peers[0].path
        if path != args.path:
            raise SystemExit(f"A's path to B is {path!r}, not {args.path!r}")
        to: list[float] = []
        exit_: list[float] = []
        t0 = time.monotonic()
        for _ in range(args.runs):
            to.append(upload(to_b, nbytes))
            exit_.append(upload(through_b, nbytes))
        load = Path("/proc/loadavg").read_text().split()[:3]
        d, e = statistics.median(to), statistics.median(exit_)
        print(f"upload {args.mib} MiB x{args.runs} over the {path} path (alternating, "
              f"{time.monotonic() - t0:.0f} s), load {' '.join(load)}")
        print(f"  to B       A -> B's tailnet sink:          {d:7.2f} MB/s  {[round(x, 2) for x in to]}")
        print(f"  through B  A -> B -> internet kernel sink: {e:7.2f} MB/s  {[round(x, 2) for x in exit_]}")
        print(f"  through B / to B: {e / d:.2f}")


if __name__ == "__main__":
    main()
