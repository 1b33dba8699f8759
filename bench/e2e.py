"""End-to-end Python ↔ Python throughput across the tailnet, direct and via DERP; start→Running; RSS.

Usage: ``.venv/bin/python bench/e2e.py [--mib 8] [--modes direct,derp]``. A ``LocalTailnet`` (control
+ DERP relay + STUN) runs on 127.0.0.1 in this process; each node is an ``ActorDevice`` in its own
child interpreter (as two apps would be; they do not share a GIL). ``beta`` listens, ``alpha`` dials
``beta`` by MagicDNS name and sends ``--mib`` MiB in one TCP flow; beta reads to EOF and checks the
SHA-256. "derp" mode advertises no endpoints and drops every UDP datagram read (DERP only); "direct"
warms up until disco reports a direct path first. Reported per mode: MB/s as seen by the receiver,
time from ``start()`` to Running for each node, each node's RSS after the transfer, and the path.
The Go tsnet rows of issue 7 (Python→Go, Go→Go) are not measured here yet.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHUNK = 65536


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _data(n: int) -> bytes:
    block = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(CHUNK // 32))
    return (block * (n // len(block) + 1))[:n]


def _node(role: str, url: str, key: str, tmp: str, direct: bool, nbytes: int, out: Any, go: Any) -> None:
    import anyio
    from pytsnet.messages.magicsock import UdpBlackhole

    from pytsnet.config import Config
    from pytsnet.device import ActorDevice

    dev = ActorDevice(Config(dir=Path(tmp) / role, hostname=role, auth_key=key, control_url=url),
                      bind_host="127.0.0.1", advertise_endpoints=direct, backoff_max=1.0)
    t0 = time.monotonic()
    dev.start()
    dev.wait_until_running_blocking(60)
    t_running = time.monotonic() - t0
    if not direct:
        assert dev.system is not None
        udp = dev.system.lookup("magicsock.udp")
        assert udp is not None
        udp.tell(UdpBlackhole(enabled=True))
    while not dev.status().peers:
        time.sleep(0.05)
    result: dict[str, Any] = {"role": role, "running_s": t_running}

    async def serve() -> None:
        lst = await dev.listen(5001)
        out.put(("ready", role))
        for expect in (None, nbytes):  # a warm-up flow, then the measured one
            s = await lst.accept()
            h, n, first = hashlib.sha256(), 0, None
            while True:
                try:
                    chunk = await s.receive(CHUNK)
                except anyio.EndOfStream:
                    break
                first = first or time.monotonic()
                h.update(chunk)
                n += len(chunk)
            dt = time.monotonic() - (first or time.monotonic())
            await s.aclose()
            if expect is not None:
                result.update(bytes=n, seconds=dt, sha256=h.hexdigest())

    async def dial() -> None:
        go.get()  # beta listens
        warm = _data(256 << 10)
        deadline = time.monotonic() + 30
        s = await dev.tcp_connect("beta", 5001)
        await s.send(warm)
        while direct and dev.status().peers[0].path != "direct" and time.monotonic() < deadline:
            await s.send(warm[:4096])
            await anyio.sleep(0.1)
        await s.send_eof()
        await s.drain()
        await s.aclose()
        data = _data(nbytes)
        s = await dev.tcp_connect("beta", 5001)
        for i in range(0, nbytes, CHUNK):
            await s.send(data[i:i + CHUNK])
        await s.send_eof()
        await s.drain()
        result["sha256"] = hashlib.sha256(data).hexdigest()

    anyio.run(serve if role == "beta" else dial)
    st = dev.status()
    p = st.peers[0]
    result.update(rss_mib=_rss_mib(), path=p.path, derp_bytes_out=p.derp_bytes_out,
                  udp_bytes_out=p.udp_bytes_out)
    out.put(("done", result))
    go.get()  # stay up until both are done (alpha's last bytes may not be ACKed yet)
    dev.close()


def run_mode(mode: str, mib: int) -> dict[str, Any]:
    from pytsnet.localnet.server import LocalTailnet

    ctx = mp.get_context("spawn")
    direct = mode == "direct"
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, \
            LocalTailnet(Path(tmp) / "control", listen="127.0.0.1:0") as net:
        out, go = ctx.Queue(), ctx.Queue()
        procs = [ctx.Process(target=_node, args=(r, net.control_url, net.create_authkey(), tmp, direct,
                                                 mib << 20, out, go)) for r in ("beta", "alpha")]
        for pr in procs:
            pr.start()
        results: dict[str, dict[str, Any]] = {}
        while len(results) < 2:
            kind, val = out.get(timeout=600)
            if kind == "ready":
                go.put(1)
            else:
                results[val["role"]] = val
        go.put(1)
        go.put(1)
        for pr in procs:
            pr.join(30)
    a, b = results["alpha"], results["beta"]
    return {"mode": mode, "ok": a["sha256"] == b["sha256"] and b["bytes"] == mib << 20,
            "mbps": b["bytes"] / b["seconds"] / 1e6, "alpha": a, "beta": b}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=8)
    ap.add_argument("--modes", default="direct,derp")
    args = ap.parse_args(argv)
    print(f"command: .venv/bin/python bench/e2e.py --mib {args.mib} --modes {args.modes}")
    rows = [run_mode(m, args.mib) for m in args.modes.split(",")]
    print(f"{'mode':<7} {'MB/s':>7} {'exact':>6} {'path':>7} {'alpha start→Running':>20} "
          f"{'beta start→Running':>19} {'alpha RSS MiB':>14} {'beta RSS MiB':>13}")
    for r in rows:
        a, b = r["alpha"], r["beta"]
        print(f"{r['mode']:<7} {r['mbps']:>7.2f} {('yes' if r['ok'] else 'NO'):>6} {a['path']:>7} "
              f"{a['running_s']:>19.2f}s {b['running_s']:>18.2f}s {a['rss_mib']:>14.1f} "
              f"{b['rss_mib']:>13.1f}")
    by = {r["mode"]: r["mbps"] for r in rows}
    if "direct" in by and "derp" in by and by["derp"]:
        print(f"direct/DERP throughput ratio: {by['direct'] / by['derp']:.2f}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
