"""Impaired-link benchmark: one TCP flow pytsnet -> kernel next to kernel -> kernel, same impairment.

Run as root: ``.venv/bin/python bench/impaired.py [--mib 8] [--runs 3] [--cc cubic|newreno]``.
The link model is ``tests/interop/test_netstack_kernel.py``'s impairment rig (``TunPump`` /
``TunBridge`` applying 2% loss, 1% duplication, 10% reordering and 20 ms delay in both
directions, seeded). Each run alternates the two transfers, so both see the same machine load;
the script prints each pair and the median ratio pytsnet/kernel (issue 14's done-when: >= 0.7).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import statistics
import threading
import time

from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.interface import Stack
from pytsnet.netstack.tcp.connection import TcpConfig
from pytsnet.testing.netns import Netns, isolated_netns
from pytsnet.testing.tun import Impairment, TunBridge, TunPump, open_tun

KERNEL, STACK = "10.77.0.1", "10.77.0.2"
CHUNK = 1 << 20


def impairment(seed: int) -> Impairment:
    return Impairment(loss=0.02, duplicate=0.01, reorder=0.10, delay=0.020, seed=seed)


def _kernel_sink(ns: Netns, host: str, port: int, box: dict[str, float]) -> threading.Thread:
    srv = ns.call(lambda: socket.create_server((host, port)))

    def run() -> None:
        with srv:
            srv.settimeout(30)
            c, _ = srv.accept()
            with c:
                n = 0
                while b := c.recv(CHUNK):
                    n += len(b)
                box["done"] = time.monotonic()
                box["bytes"] = n

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def pytsnet_to_kernel(mib: int, seed: int, cc: str) -> float:
    """Mbit/s of one flow the stack dials and fills, to a kernel socket that reads to EOF."""
    with isolated_netns("bim") as ns:
        tun = open_tun(ns, local=KERNEL, peer=STACK)
        cfg = StackConfig(addresses=(ipaddress.ip_address(STACK),))
        tcp = TcpConfig(mtu=cfg.mtu, send_buffer=cfg.send_buffer, recv_buffer=cfg.recv_buffer,
                        congestion_control=cc)
        stack = Stack(cfg, tcp_config=tcp)
        pump = TunPump(tun, stack, impairment(seed)).start()
        box: dict[str, float] = {}
        t = _kernel_sink(ns, KERNEL, 9100, box)
        total = mib << 20
        data = memoryview(b"\x5a" * total)
        try:
            t0 = time.monotonic()
            conn = pump.call(lambda: stack.tcp_connect((KERNEL, 9100), time.monotonic()))
            off = 0
            while off < total:
                n = pump.call(lambda o=off: conn.send(data[o:o + 262144]))
                if conn.error is not None:
                    raise conn.error
                off += n
                if not n:
                    time.sleep(0.002)
            pump.call(conn.shutdown_write)
            t.join(600)
            elapsed = box["done"] - t0
            assert box["bytes"] == total, box
            stats = pump.call(lambda: (conn.rto_expiries, conn.fast_recoveries, conn.retransmitted_segments,
                                       conn.spurious_recoveries))
        finally:
            pump.stop()
            tun.close()
        print(f"  pytsnet->kernel {total * 8 / elapsed / 1e6:6.2f} Mbit/s  ({elapsed:.1f} s; "
              f"rto, recoveries, rexmits, spurious = {stats}; impairment {pump.impaired})", flush=True)
        return total * 8 / elapsed / 1e6


def kernel_to_kernel(mib: int, seed: int, cc: str | None) -> float:
    """Mbit/s of one kernel flow over a ``TunBridge`` with the same impairment.

    ``cc`` sets the sender's TCP_CONGESTION (None: the host default, bbr on this machine, which
    ignores random loss and so is not what a loss-based sender can be compared with).
    """
    with isolated_netns("bka") as a, isolated_netns("bkb") as b:
        ta = open_tun(a, local="10.78.0.1", peer="10.78.0.2")
        tb = open_tun(b, local="10.78.0.2", peer="10.78.0.1")
        bridge = TunBridge(ta, tb, impairment(seed)).start()
        box: dict[str, float] = {}
        t = _kernel_sink(b, "10.78.0.2", 9800, box)
        total = mib << 20
        try:
            t0 = time.monotonic()
            def dial() -> socket.socket:
                s = socket.socket()
                if cc is not None:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
                s.settimeout(30)
                s.connect(("10.78.0.2", 9800))
                return s

            cli = a.call(dial)
            used = cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
            with cli:
                buf = b"\x5a" * CHUNK
                for _ in range(total // CHUNK):
                    cli.sendall(buf)
                cli.shutdown(socket.SHUT_WR)
                t.join(600)
            elapsed = box["done"] - t0
            assert box["bytes"] == total, box
        finally:
            bridge.stop()
            ta.close()
            tb.close()
        print(f"  kernel->kernel  {total * 8 / elapsed / 1e6:6.2f} Mbit/s  ({used}, {elapsed:.1f} s; "
              f"impairment {bridge.impaired})", flush=True)
        return total * 8 / elapsed / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cc", default="cubic", help="the stack's congestion control: cubic or newreno")
    ap.add_argument("--kernel-cc", default="cubic,default",
                    help="kernel sender congestion controls to measure (comma list; 'default' = host's)")
    args = ap.parse_args()
    kccs = [None if k == "default" else k for k in args.kernel_cc.split(",")]
    ratios: dict[str | None, list[float]] = {k: [] for k in kccs}
    for run in range(args.runs):
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print(f"run {run + 1} (load {load}, cc {args.cc}):", flush=True)
        py = pytsnet_to_kernel(args.mib, seed=run + 1, cc=args.cc)
        for kcc in kccs:
            k = kernel_to_kernel(args.mib, seed=run + 1, cc=kcc)
            ratios[kcc].append(py / k)
            print(f"  ratio against kernel {kcc or 'default'}: {py / k:.2f}", flush=True)
    for kcc, rs in ratios.items():
        print(f"median ratio pytsnet ({args.cc}) / kernel ({kcc or 'default'}) over {args.runs} runs: "
              f"{statistics.median(rs):.2f}")


if __name__ == "__main__":
    main()
