"""Where the time per packet goes: ``bench/e2e.py``'s Python→Python transfer with py-spy on both nodes.

Usage (root, ``.venv/bin/python -m pip install py-spy``): ``.venv/bin/python bench/profile_e2e.py --mib 16
--mode direct --out DIR`` profiles one run; ``--no-spy`` makes the same run without the profiler (py-spy
slows the nodes, so take absolute CPU from such a run); ``--analyse --out DIR [--baseline DIR2]``
re-reads a run and splits DIR2's exact per-thread CPU by DIR's per-thread samples.

Two ``ActorDevice`` nodes run in child interpreters as in ``bench/e2e.py``; after the warm-up flow (and,
direct, once disco reports a direct path) the parent attaches ``py-spy record --gil --nonblocking
--threads --format raw`` to both and only then lets ``alpha`` send, and stops it when ``beta`` has read to
EOF, so the profiles hold the measured transfer alone. Per-thread user/system CPU and context switches
come from ``/proc`` (exact, not sampled). Each sample is put in one stage by its innermost frame that a
rule names (the source line of that frame decides, e.g. ``.decrypt(`` = crypto, ``sock.sendto(`` =
syscall); a thread's user CPU is split by its samples' stages, its system CPU is the kernel row.

``--heartbeat S`` shortens disco's heartbeat so that pings happen during the transfer; each node then
polls its peer's disco RTT (``status().peers[0].rtt``: ping built → pong handled by the DiscoPinger)
and the backlog of the ``QUEUED`` mailboxes every 20 ms, idle and under bulk. ``--switch-interval``
sets ``sys.setswitchinterval`` in both nodes; ``--native`` adds C frames (py-spy then pauses the nodes
for each sample).
"""

from __future__ import annotations

import argparse
import ast
import collections
import functools
import gzip
import hashlib
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import _cpu_s, _data, poll_disco_rtt, receive_all, send_all, warm_up

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = 1240  # TCP payload per data packet: MTU 1280 - IPv4 20 - TCP 20 (netstack TcpConfig)


# -- the two nodes (child interpreters) ----------------------------------------------------------------

QUEUED = ("magicsock.udp", "wgengine", "netstack", "magicsock.disco")  # mailboxes sampled with the RTT


def _node(role: str, url: str, key: str, tmp: str, direct: bool, nbytes: int, heartbeat: float | None,
          switch: float | None, out: Any, go: Any) -> None:
    import anyio

    if switch:
        sys.setswitchinterval(switch)

    from pytsnet.config import Config
    from pytsnet.device import ActorDevice
    from pytsnet.messages.magicsock import UdpBlackhole
    from pytsnet.wire.magicsock.endpoint import Timings

    timings = Timings(heartbeat=heartbeat) if heartbeat else None
    dev = ActorDevice(Config(dir=Path(tmp) / role, hostname=role, auth_key=key, control_url=url,
                             bind_host="127.0.0.1", advertise_endpoints=direct, backoff_max=1.0,
                             timings=timings))
    dev.start()
    dev.wait_until_running_blocking(60)
    if not direct:
        assert dev.system is not None
        udp = dev.system.lookup("magicsock.udp")
        assert udp is not None
        udp.tell(UdpBlackhole(enabled=True))
    rtts: list[tuple[float, float]] = []
    queued: list[tuple[float, tuple[int, ...]]] = []
    stop = threading.Event()
    poller = threading.Thread(target=poll_disco_rtt, args=(dev, rtts, stop, 0.02, QUEUED, queued),
                              daemon=True)
    result: dict[str, Any] = {"role": role, "pid": os.getpid()}

    async def serve() -> None:
        lst = await dev.listen(5001)
        out.put(("ready", role))
        for measured in (False, True):
            s = await lst.accept()
            cpu0 = _cpu_s()
            digest, n, first = await receive_all(s)
            if measured:
                result.update(bytes=n, first=first, last=time.monotonic(), sha256=digest,
                              cpu_s=_cpu_s() - cpu0)
            await s.aclose()
            if not measured and heartbeat:
                poller.start()

    async def dial() -> None:
        go.get()  # beta listens
        await warm_up(dev, direct)
        if heartbeat:
            poller.start()
            await anyio.sleep(max(2.0, 4 * heartbeat))  # idle RTT samples before the bulk transfer
        data = _data(nbytes)
        out.put(("armed", role))
        go.get()  # the profilers are attached
        cpu0 = _cpu_s()
        result["start"] = time.monotonic()
        await send_all(dev, data)
        result["cpu_s"] = _cpu_s() - cpu0
        result["sha256"] = hashlib.sha256(data).hexdigest()

    out.put(("pid", role, os.getpid()))
    anyio.run(serve if role == "beta" else dial)
    p = dev.status().peers[0]
    result["thread_names"] = {t.native_id: t.name for t in threading.enumerate()}
    result.update(path=p.path, udp_bytes_in=p.udp_bytes_in, udp_bytes_out=p.udp_bytes_out,
                  derp_bytes_in=p.derp_bytes_in, derp_bytes_out=p.derp_bytes_out)
    time.sleep(0.5 if heartbeat else 0)
    stop.set()
    result["rtts"] = rtts
    result["queued"] = queued
    out.put(("done", result))
    go.get()  # stay up until both are done
    dev.close()


# -- /proc accounting (exact per-thread CPU and context switches) ------------------------------------------

Snap = dict[int, tuple[float, float, int, int]]


def _threads(pid: int) -> Snap:
    """tid → (user CPU s, system CPU s, voluntary, involuntary context switches)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: Snap = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        f = stat.rsplit(")", 1)[1].split()
        cs = {k: int(v) for k, v in (ln.split(":\t") for ln in status.splitlines() if "ctxt_switches" in ln)}
        out[int(tid)] = (int(f[11]) / tick, int(f[12]) / tick, cs["voluntary_ctxt_switches"],
                         cs["nonvoluntary_ctxt_switches"])
    return out


def _delta(a: Snap, b: Snap) -> dict[int, list[float]]:
    return {t: [b[t][i] - a.get(t, (0.0, 0.0, 0, 0))[i] for i in range(4)] for t in b}


# -- the run ----------------------------------------------------------------------------------------------

def run(mode: str, mib: int, out_dir: Path, rate: int, heartbeat: float | None, spy: bool,
        native: bool = False, switch: float | None = None) -> dict[str, Any]:
    from pytsnet.localnet.server import LocalTailnet

    ctx = mp.get_context("spawn")
    direct = mode == "direct"
    out_dir.mkdir(parents=True, exist_ok=True)
    spy_bin = str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp, \
            LocalTailnet(Path(tmp) / "control", listen="127.0.0.1:0") as net:
        out = ctx.Queue()
        gos = {r: ctx.Queue() for r in ("beta", "alpha")}
        procs = {r: ctx.Process(target=_node, args=(r, net.control_url, net.create_authkey(), tmp, direct,
                                                    mib << 20, heartbeat, switch, out, gos[r]))
                 for r in ("beta", "alpha")}
        procs["beta"].start()
        pids: dict[str, int] = {}
        results: dict[str, dict[str, Any]] = {}
        spies: list[subprocess.Popen[bytes]] = []
        before: dict[str, Snap] = {}
        after: dict[str, Snap] = {}
        load = [os.getloadavg()]
        relay_names: dict[int | None, str] = {}

        while len(results) < 2:
            msg = out.get(timeout=600)
            if msg[0] == "pid":
                pids[msg[1]] = msg[2]
            elif msg[0] == "ready":
                gos["alpha"].put(1)
                procs["alpha"].start()
            elif msg[0] == "armed":
                if not direct:  # the DERP relay runs on LocalTailnet's loop in this process
                    pids["relay"] = os.getpid()
                    relay_names = {t.native_id: t.name for t in threading.enumerate()}
                if spy:
                    for role, pid in pids.items():
                        spies.append(subprocess.Popen(
                            [spy_bin, "record", "--pid", str(pid), "--rate", str(rate), "--gil", "--threads",
                             "--full-filenames", "--format", "raw",
                             # --native needs py-spy to pause the process per sample (slower, skewed)
                             *(["--native"] if native else ["--nonblocking"]),
                             "-o", str(out_dir / f"{mode}-{role}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    time.sleep(1.0)  # py-spy attached and sampling
                before = {r: _threads(p) for r, p in pids.items()}

                gos["alpha"].put(1)
            else:
                results[msg[1]["role"]] = msg[1]
                if len(results) == 1 or msg[1]["role"] == "beta":
                    after.setdefault("alpha", _threads(pids["alpha"]))
                    after.setdefault("beta", _threads(pids["beta"]))
                    if "relay" in pids:
                        after.setdefault("relay", _threads(pids["relay"]))
        for sp in spies:
            sp.send_signal(signal.SIGINT)
        for sp in spies:
            sp.wait(60)
        load.append(os.getloadavg())
        for q in gos.values():
            q.put(1)
        for pr in procs.values():
            pr.join(30)
    a, b = results["alpha"], results["beta"]
    seconds = b["last"] - b["first"]
    report: dict[str, Any] = {
        "mode": mode, "mib": mib, "ok": a["sha256"] == b["sha256"] and b["bytes"] == mib << 20,
        "mbps": b["bytes"] / seconds / 1e6, "seconds": seconds, "path": a["path"],
        "data_packets": -(-b["bytes"] // PAYLOAD), "load": load, "profiled": spy, "rate": rate,
        "native": native, "switch_interval": switch or sys.getswitchinterval(),
        "threads": {r: _delta(before[r], after[r]) for r in pids}, "alpha": a, "beta": b,
        "relay": {"thread_names": relay_names},
    }
    (out_dir / f"{mode}-run.json").write_text(json.dumps(report, indent=1, default=str))
    return report


# -- analysis of the raw (collapsed) stacks -----------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    func: str
    file: str
    line: int

    @property
    def rel(self) -> str:
        f = self.file
        for base in (str(ROOT) + "/", "/site-packages/", "/lib/python3.11/"):
            if base in f:
                return f.split(base, 1)[1]
        return f


def _parse_frame(s: str) -> Frame:
    func, _, rest = s.partition(" (")
    file, _, line = rest.rstrip(")").rpartition(":")
    return Frame(func, file, int(line) if line.isdigit() else 0)


def _here(file: str) -> Path:
    """A profiled file in this checkout (profiles keep the absolute paths of the tree they ran in)."""
    for top in ("/pytsnet/", "/bench/"):
        if top in file and not Path(file).exists():
            return ROOT / (top.strip("/") + "/" + file.split(top, 1)[1])
    return Path(file)


@functools.cache
def _source(file: str) -> list[str]:
    try:
        return _here(file).read_text().splitlines()
    except OSError:
        return []


@functools.cache
def _defs(file: str) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name) of each def in ``file``."""
    try:
        tree = ast.parse(_here(file).read_text())
    except (OSError, SyntaxError):
        return []
    out: list[tuple[int, int, str]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{ch.name}"
                if not isinstance(ch, ast.ClassDef):
                    out.append((ch.lineno, ch.end_lineno or ch.lineno, name))
                walk(ch, name + ".")
    walk(tree, "")
    return out


def qualname(fr: Frame) -> str:
    """``file:defline Class.func`` for the innermost def holding the sampled line."""
    best = None
    for lo, hi, name in _defs(fr.file):
        if lo <= fr.line <= hi and (best is None or lo >= best[0]):
            best = (lo, name)
    if best is None:
        return f"{fr.rel}:{fr.line} {fr.func}"
    return f"{fr.rel}:{best[0]} {best[1]}"


def line_text(fr: Frame) -> str:
    src = _source(fr.file)
    return src[fr.line - 1].strip() if 0 < fr.line <= len(src) else ""


# A stage per rule: (stage, file substring or "", source-line substring or ""); the innermost frame that
# matches any rule decides. Line rules come first so that a call into C is charged to what it does.
LINE_RULES: list[tuple[str, str]] = [
    ("crypto (ChaCha20-Poly1305, BLAKE2s)", "encrypt("), ("crypto (ChaCha20-Poly1305, BLAKE2s)", "decrypt("),
    ("UDP/TCP socket syscalls", "recvfrom_into("), ("UDP/TCP socket syscalls", "recvmmsg("),
    ("UDP/TCP socket syscalls", ".sendto("), ("UDP/TCP socket syscalls", ".sendmsg("),
    ("UDP/TCP socket syscalls", "select.select("), ("UDP/TCP socket syscalls", ".recv_into("),
    ("UDP/TCP socket syscalls", "sock.send("), ("UDP/TCP socket syscalls", "sock.recv("),
    ("app (sha256, data slicing)", "h.update("), ("app (sha256, data slicing)", "hashlib."),
]
FILE_RULES: list[tuple[str, str]] = [
    ("/cryptography/", "crypto (ChaCha20-Poly1305, BLAKE2s)"),
    ("/socket.py", "UDP/TCP socket syscalls"), ("/selectors.py", "UDP/TCP socket syscalls"),
    ("/pydantic", "pydantic message objects"), ("pytsnet/messages/", "pydantic message objects"),
    ("actors/netstack/channel.py", "flow actor + FlowChannel"),
    ("actors/netstack/flow.py", "flow actor + FlowChannel"),
    ("actors/netstack/", "netstack actor (demux)"),
    ("actors/wgengine/", "WireGuard engine actor"),
    ("actors/magicsock/derp", "DERP client/framing"),
    ("actors/magicsock/", "magicsock UDP actor + reader"),
    ("actors/runtime/mailbox.py", "mailbox put/get + wake-ups (Condition, locks)"),
    ("/threading.py", "mailbox put/get + wake-ups (Condition, locks)"),
    ("/queue.py", "mailbox put/get + wake-ups (Condition, locks)"),
    ("actors/runtime/", "actor dispatch (cell, tell, pool, timers)"),
    ("/pykka/", "actor dispatch (cell, tell, pool, timers)"),
    ("pytsnet/netstack/tcp/", "netstack TCP (segment parse/emit, ACKs, SACK, timers)"),
    ("pytsnet/netstack/checksum.py", "checksums (RFC 1071 as big ints)"),
    ("pytsnet/netstack/filter.py", "packet filter (summarize, check)"),
    ("/ipaddress.py", "ipaddress objects (stdlib)"),
    ("pytsnet/netstack/", "IPv4 parse/emit, stack demux"),
    ("pytsnet/wire/wireguard/", "WireGuard framing (wire/)"),
    ("pytsnet/wire/derp/", "DERP client/framing"),
    ("pytsnet/localnet/derp_server", "DERP relay (derp_server.py)"),
    ("pytsnet/wire/udp_demux", "magicsock UDP actor + reader"),
    ("pytsnet/wire/", "other wire/"),
    ("/anyio/", "app side: anyio/asyncio + device stream"),
    ("/asyncio/", "app side: anyio/asyncio + device stream"),
    ("pytsnet/", "app side: anyio/asyncio + device stream"),
    ("/logging/", "logging"), ("bench/", "app (sha256, data slicing)"),
]


def stage_of(stack: list[Frame]) -> str:
    for fr in reversed(stack):  # innermost first
        text = line_text(fr)
        for stage, needle in LINE_RULES:
            if needle in text:
                return stage
        for needle, stage in FILE_RULES:
            if needle in fr.file:
                return stage
    return "other (stdlib, interpreter)"


def load_raw(path: Path) -> list[tuple[str, list[Frame], int]]:
    """(thread, frames root→leaf, count) per collapsed line of a ``py-spy --format raw --threads`` file."""
    rows = []
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    for ln in text.splitlines():
        stack, _, n = ln.rpartition(" ")
        parts = stack.split(";")
        thread = parts[0]
        rows.append((thread, [_parse_frame(p) for p in parts[1:] if " (" in p], int(n)))
    return rows


def thread_role(frames: list[Frame]) -> str:
    """Name a thread by the actor its loop serves (the first frame in actors/ or pytsnet/ under it)."""
    for fr in frames:
        if "actors/runtime/cell.py" in fr.file or "threading.py" in fr.file:
            continue
        if "/actors/" in fr.file or "/pytsnet/" in fr.file or "bench/" in fr.file:
            return qualname(fr).split(" ", 1)[1]
    return frames[-1].func if frames else "?"


def _thread_cpu(rep: dict[str, Any], role: str) -> dict[str, list[float]]:
    """Thread name → [user s, system s, voluntary, involuntary] over the transfer (pool workers summed)."""
    names = {int(k): v for k, v in rep[role].get("thread_names", {}).items()}
    out: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0, 0])
    for tid, got in rep["threads"][role].items():
        vals = [got[0], 0.0, got[1], got[2]] if len(got) == 3 else got  # runs before the user/sys split
        name = names.get(int(tid), f"tid {tid}")
        if "pool-worker" in name:
            name = name.rsplit("-worker-", 1)[0] + "-workers (flows)"
        for i, v in enumerate(vals):
            out[name][i] += v
    return out


def _row(label: str, us: float, node_us: float) -> str:
    rate = f"{1e6 / us:,.0f}" if us > 0 else "-"
    return f"| {label} | {us / node_us * 100:.1f} | {us:.1f} | {rate} |"


def analyse(out_dir: Path, mode: str, baseline: Path | None = None, top: int = 12) -> str:
    """The report: a profiled run's per-thread stage shares applied to the exact per-thread CPU of
    ``baseline`` (an unprofiled run: py-spy itself slows the nodes) or of the profiled run itself."""
    rep = json.loads((out_dir / f"{mode}-run.json").read_text())
    base = json.loads((baseline / f"{mode}-run.json").read_text()) if baseline else rep
    lines = [f"## {mode}: {base['mib']} MiB, {base['mbps']:.1f} MB/s unprofiled" if baseline else
             f"## {mode}: {rep['mib']} MiB, {rep['mbps']:.1f} MB/s (profiled={rep['profiled']})"]
    how = (f"profile run {rep['mbps']:.1f} MB/s at {rep['rate']} samples/s" if rep["profiled"]
           else "not profiled")
    lines.append(f"{how}, path {rep['path']}; "
                 f"{base['data_packets']} data packets of {PAYLOAD} B; load before/after {base['load']}")
    for role in ("alpha", "beta"):
        if not rep[role].get("rtts"):
            continue
        t0, t1 = rep["alpha"]["start"], rep["beta"]["last"]
        idle = [v * 1000 for t, v in rep[role]["rtts"] if t < t0]
        bulk = [v * 1000 for t, v in rep[role]["rtts"] if t0 <= t <= t1 + 0.05]
        lines.append(f"disco RTT seen by {role}: idle {', '.join(f'{v:.1f}' for v in idle) or '-'} ms; "
                     f"during bulk {', '.join(f'{v:.1f}' for v in bulk) or '-'} ms")
        qs = [v for t, v in rep[role].get("queued", []) if t0 <= t <= t1]
        if qs:
            cols = list(zip(*qs, strict=True))
            means = ", ".join(f"{n} {sum(c) / len(c):.1f} / {max(c)}"
                              for n, c in zip(QUEUED, cols, strict=True))
            lines.append(f"  {role}'s mailboxes during bulk, waiting (mean / max, {len(qs)} samples): "
                         f"{means}")
    for role in ("alpha", "beta", "relay"):
        if role not in base["threads"]:
            continue
        what = {"alpha": "sender", "beta": "receiver", "relay": "DERP relay (bench process)"}[role]
        pk, secs = base["data_packets"], base["seconds"]
        thr = _thread_cpu(base, role)
        user = sum(v[0] for v in thr.values())
        sys_s = sum(v[1] for v in thr.values())
        cs = sum(v[2] + v[3] for v in thr.values())
        node_us = (user + sys_s) / pk * 1e6
        cpu = user + sys_s
        lines.append(f"\n### {what} ({role}): {cpu:.2f} CPU s ({sys_s / cpu * 100:.0f}% kernel) "
                     f"in {secs:.2f} s = {node_us:.1f} µs per data packet = {pk / cpu:,.0f} packets/s "
                     f"per CPU; {cs / pk:.2f} context switches per packet")
        lines.append("\n| thread | user s | sys s | µs/packet | % of node | ctx switches vol/invol |\n"
                     "|---|---:|---:|---:|---:|---:|")
        for name, (u, sy, v, i) in sorted(thr.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
            if u + sy <= 0:
                continue
            lines.append(f"| {name} | {u:.2f} | {sy:.2f} | {(u + sy) / pk * 1e6:.1f} | "
                         f"{(u + sy) / (user + sys_s) * 100:.0f} | {v:.0f}/{i:.0f} |")
        raw = out_dir / f"{mode}-{role}.txt"
        if not raw.exists():
            raw = raw.with_suffix(".txt.gz")
        if not raw.exists():
            continue
        rows = load_raw(raw)
        total = sum(n for _, _, n in rows)
        per_thread: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        selfc: collections.Counter[str] = collections.Counter()
        cum: collections.Counter[str] = collections.Counter()
        for thread, frames, n in rows:
            name = thread.split(": ", 1)[-1]
            if "pool-worker" in name:
                name = name.rsplit("-worker-", 1)[0] + "-workers (flows)"
            per_thread[name][stage_of(frames)] += n
            if frames:
                selfc[qualname(frames[-1])] += n
            for q in {qualname(f) for f in frames}:
                cum[q] += n
        # A thread's user time split by its own samples' stages; its system time is kernel work.
        stage_us: collections.Counter[str] = collections.Counter()
        for name, (u, _sy, _v, _i) in thr.items():
            got = per_thread.get(name)
            if not got:
                stage_us["unsampled threads"] += u / pk * 1e6
                continue
            n_t = sum(got.values())
            for st, n in got.items():
                stage_us[st] += u * n / n_t / pk * 1e6
        lines.append(f"\n{total} GIL-holder samples; each thread's user CPU split by its samples, system CPU "
                     "as kernel\n\n| stage | % of node CPU | µs/packet | packets/s if only this |\n"
                     "|---|---:|---:|---:|")
        for st, us in stage_us.most_common():
            lines.append(_row(st, us, node_us))
        lines.append(_row("kernel (sendto/recvfrom, futex wake/wait, scheduling)", sys_s / pk * 1e6, node_us))
        gil_us = (user + sys_s) / pk * 1e6 / total  # µs per sample, node-wide, to rank functions
        lines.append(f"\nTop {top} by self time (share of GIL-holder samples):\n\n"
                     "| function (file:def line) | self % | ≈ µs/packet |\n|---|---:|---:|")
        for q, n in selfc.most_common(top):
            lines.append(f"| `{q}` | {n / total * 100:.1f} | {n * gil_us:.2f} |")
        lines.append(f"\nTop {top} by cumulative time (thread loops left out):\n\n"
                     "| function (file:def line) | cum % | ≈ µs/packet |\n|---|---:|---:|")
        loops = ("threading.py", "actors/runtime/cell.py", "runpy", "multiprocessing/", "<module>", "pykka/",
                 "dispatch.py", "profile_e2e.py", "_asyncio.py")
        shown = 0
        for q, n in cum.most_common():
            if any(x in q for x in loops):
                continue
            lines.append(f"| `{q}` | {n / total * 100:.1f} | {n * gil_us:.2f} |")
            shown += 1
            if shown >= top:
                break
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--mode", choices=("direct", "derp"), default="direct")
    ap.add_argument("--out", type=Path, default=Path("/tmp/pytsnet-profile"))
    ap.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    ap.add_argument("--heartbeat", type=float, default=None, help="disco heartbeat seconds (RTT under bulk)")
    ap.add_argument("--no-spy", action="store_true", help="no profiler: the same run's numbers without it")
    ap.add_argument("--native", action="store_true", help="py-spy --native: C frames too (GIL, futex)")
    ap.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval in both nodes")
    ap.add_argument("--analyse", action="store_true", help="only analyse the raw files already in --out")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="an unprofiled run's --out: its exact per-thread CPU, split by these shares")
    args = ap.parse_args(argv)
    if not args.analyse:
        rep = run(args.mode, args.mib, args.out, args.rate, args.heartbeat, not args.no_spy, args.native,
                  args.switch_interval)
        if not rep["ok"]:
            print("transfer corrupt or short", file=sys.stderr)
            return 1
    print(analyse(args.out, args.mode, args.baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
