"""A flood victim and a flood attacker, each its own process (``python -m pytsnet.testing.flood``).

``victim`` joins a tailnet as an ``ActorDevice`` bound to loopback, echoes every TCP connection on
a tailnet port and answers one JSON line per command on stdin: ``status`` (drops, backlog,
counters, RSS), ``drain SECONDS`` (how long until the data plane's backlog read zero). Its own
process, so its RSS is its own. ``attack`` blasts UDP at a port as fast as one process goes, until it
has sent ``--count`` datagrams, ``--seconds`` have passed and ``--stop-file`` exists (or
``--max-seconds``). Shapes: ``transport`` (WireGuard transport headers with random receiver
indexes), ``junk`` (random bytes), ``initiation`` (genuine handshake initiations, valid mac1 for
``--victim-key``, from static keys the victim does not know). Loopback only: the rigs that use it
(tests/hostile/test_hostile_flood.py, bench/hostile.py) never aim it anywhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import queue
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FloodResult", "FloodRig", "main"]

_ECHO_CHUNK = 64 << 10


def _rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --- the victim --------------------------------------------------------------------------------------

def _echo(conn: Any) -> None:
    try:
        while True:
            data = conn.recv(_ECHO_CHUNK)
            if not data:
                break
            conn.sendall(data)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()


def _serve_echo(dev: Any, port: int) -> None:
    lst = dev.listen_blocking(port)
    while True:
        try:
            conn, _ = lst.accept()
        except OSError:
            return  # the device is closing
        threading.Thread(target=_echo, args=(conn,), daemon=True).start()


def _backlog(dev: Any) -> dict[str, int]:
    """The queued bytes of each data-plane actor (``status().backlog``, dropped-bytes totals aside)."""
    b = dev.status().backlog
    return {k: v for k, v in b.items() if k.endswith("_bytes") and not k.endswith("dropped_bytes")}


def _victim(args: argparse.Namespace) -> None:
    from pytsnet.config import Config
    from pytsnet.device import ActorDevice
    from pytsnet.wire.magicsock.endpoint import Timings

    timings = Timings(heartbeat=0.5, trust=1.5, session_active=10.0, upgrade=5.0, ping_timeout=0.8,
                      ping_interval=0.3)
    dev = ActorDevice(Config(dir=Path(args.dir), hostname=args.hostname, auth_key=args.authkey,
                             control_url=args.control, backoff_max=1.0, bind_host="127.0.0.1",
                             timings=timings, stun_interval=(2.0, 3.0)))
    dev.start()
    dev.wait_until_running_blocking(60)
    threading.Thread(target=_serve_echo, args=(dev, args.port), daemon=True).start()
    udp = dev.status().endpoints
    ref = dev.system.lookup("magicsock.udp") if dev.system is not None else None
    from pytsnet.messages.magicsock import LocalAddrRequest

    addr = ref.ask(LocalAddrRequest(), timeout=5).addr if ref is not None else ""
    _emit({"event": "ready", "ip": dev.tailscale_ips()[0], "udp": addr, "endpoints": list(udp),
           "node_key": me.node_key if (me := dev.status().self_node) is not None else None})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "status":
            t0 = time.monotonic()
            st = dev.status()
            _emit({"drops": st.drops, "backlog": st.backlog, "counters": st.counters, "rss_kib": _rss_kib(),
                   "status_seconds": time.monotonic() - t0,
                   "peers": [{"path": p.path, "has_session": p.has_session} for p in st.peers]})
        elif cmd[0] == "drain":
            limit, t0 = float(cmd[1]), time.monotonic()
            drained, first = None, None
            while time.monotonic() - t0 < limit:
                b = _backlog(dev)
                first = first or b
                if not any(b.values()):
                    drained = time.monotonic() - t0
                    break
                time.sleep(0.005)
            _emit({"drained_after": drained, "backlog_at_end": first})
        elif cmd[0] == "quit":
            break
    dev.close()


# --- the attacker -----------------------------------------------------------------------------------

def _packets(kind: str, size: int, victim_key: bytes | None, rng: random.Random) -> list[bytes]:
    if kind == "transport":
        return [struct.pack("<IIQ", 4, rng.getrandbits(32), i) + rng.randbytes(max(0, size - 16))
                for i in range(64)]
    if kind == "junk":
        return [bytes([rng.choice((0x05, 0x20, 0xFF))]) + rng.randbytes(size - 1) for _ in range(64)]
    if kind == "initiation":
        from pytsnet.wire.wireguard.cookie import CookieGenerator
        from pytsnet.wire.wireguard.handshake import create_initiation

        assert victim_key is not None, "initiation needs --victim-key"
        out = []
        for i in range(512):
            msg, _ = create_initiation(os.urandom(32), victim_key, i, time.time(), os.urandom(32))
            raw = bytearray(msg.emit())
            CookieGenerator(victim_key).add_macs(raw, 0.0)
            out.append(bytes(raw))
        return out
    raise SystemExit(f"unknown kind {kind!r}")


def _attack(args: argparse.Namespace) -> None:
    victim_key = None
    if args.victim_key:
        from pytsnet.wire.keys import NodePublic

        victim_key = NodePublic.from_text(args.victim_key).raw
    packets = _packets(args.kind, args.size, victim_key, random.Random(os.urandom(8)))
    stop = Path(args.stop_file) if args.stop_file else None
    dst = ("127.0.0.1", args.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sendto, n, errors, npk = sock.sendto, 0, 0, len(packets)
    _emit({"event": "started"})
    start = time.monotonic()
    while True:
        for _ in range(1000):
            try:
                sendto(packets[n % npk], dst)
            except OSError:
                errors += 1
            n += 1
        elapsed = time.monotonic() - start
        if elapsed >= args.max_seconds:
            break
        if n >= args.count and elapsed >= args.seconds and (stop is None or stop.exists()):
            break
    elapsed = time.monotonic() - start
    sock.close()
    _emit({"event": "done", "sent": n, "errors": errors, "seconds": elapsed, "rate": n / elapsed})


# --- the rig: a tailnet here, the victim and the attacker in their own processes ---------------------

@dataclass
class FloodResult:
    """One flood against the victim, with what it cost the victim."""

    kind: str
    size: int
    sent: int
    attack_seconds: float
    read: int  # datagrams the victim's reader took off its socket during the flood
    drops: dict[str, int]  # growth of each drop counter during the flood
    counters: dict[str, int]  # growth of each work counter during the flood
    rss_before_mib: float
    rss_peak_mib: float
    drained_after: float | None  # seconds from the end of the flood to an empty data-plane backlog
    status_seconds: float  # how long status() took right after the flood
    transfer_ok: bool | None = None  # the echo during the flood came back byte-exact
    transfer_seconds: float | None = None
    backlog_after: dict[str, int] = field(default_factory=dict)
    backlog_at_end: dict[str, int] = field(default_factory=dict)  # the first reading after the flood

    @property
    def read_rate(self) -> float:
        return self.read / self.attack_seconds if self.attack_seconds else 0.0

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_peak_mib - self.rss_before_mib


class _Lines:
    """A child's stdout as JSON lines, read on a thread so waits can time out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._q: queue.Queue[dict[str, Any]] = queue.Queue()
        assert proc.stdout is not None
        out = proc.stdout

        def pump() -> None:
            for line in out:
                with contextlib.suppress(ValueError):
                    self._q.put(json.loads(line))

        threading.Thread(target=pump, daemon=True).start()

    def next(self, timeout: float) -> dict[str, Any]:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no line from the child within {timeout}s") from None


class _RssSampler:
    """Peak resident set of a process, sampled every few milliseconds."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kib = pid, _rss_kib(pid)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            with contextlib.suppress(OSError):
                self.peak_kib = max(self.peak_kib, _rss_kib(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._t.join(2)
        return self.peak_kib / 1024


def _grew(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


class FloodRig:
    """A ``LocalTailnet`` and a legitimate peer in this process, the victim in a child process, a
    direct tunnel between them; ``flood()`` runs one attacker process against the victim's UDP port."""

    ECHO_PORT = 7300

    def __init__(self, tmp: Path) -> None:
        from pytsnet.config import Config
        from pytsnet.device import ActorDevice
        from pytsnet.localnet.server import LocalTailnet
        from pytsnet.wire.magicsock.endpoint import Timings

        self.tmp = tmp
        self.net = LocalTailnet(tmp / "control", listen="127.0.0.1:0").__enter__()
        self.victim = subprocess.Popen(
            [sys.executable, "-m", "pytsnet.testing.flood", "victim", "--control", self.net.control_url,
             "--authkey", self.net.create_authkey(), "--dir", str(tmp / "victim"),
             "--port", str(self.ECHO_PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._lines = _Lines(self.victim)
        timings = Timings(heartbeat=0.5, trust=1.5, session_active=10.0, upgrade=5.0, ping_timeout=0.8,
                          ping_interval=0.3)
        self.peer = ActorDevice(Config(dir=tmp / "peer", hostname="peer", auth_key=self.net.create_authkey(),
                                       control_url=self.net.control_url, backoff_max=1.0,
                                       bind_host="127.0.0.1", timings=timings,
                                       stun_interval=(2.0, 3.0))).start()
        try:
            ready = self._lines.next(90)
            assert ready.get("event") == "ready", ready
            self.victim_ip: str = ready["ip"]
            self.victim_port = int(ready["udp"].rsplit(":", 1)[1])
            self.victim_key: str = ready["node_key"]
            self.peer.wait_until_running_blocking(60)
            self._establish()
        except BaseException:
            self.close()
            raise

    def _establish(self) -> None:
        """An echo until the peer's path to the victim is direct: the tunnel exists before any flood."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, TimeoutError):
                if self.transfer(256 << 10)[0]:
                    rows = self.peer.status().peers
                    if rows and rows[0].path == "direct" and rows[0].has_session:
                        return
            time.sleep(0.3)
        raise TimeoutError("no direct tunnel from the peer to the victim")

    def command(self, line: str, timeout: float = 60) -> dict[str, Any]:
        assert self.victim.stdin is not None
        self.victim.stdin.write(line + "\n")
        self.victim.stdin.flush()
        return self._lines.next(timeout)

    def transfer(self, n: int, timeout: float = 240) -> tuple[bool, float]:
        """``n`` bytes to the victim's echo and back; (byte-exact, seconds)."""
        data = b"".join(hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range((n + 31) // 32))[:n]
        t0 = time.monotonic()
        conn = self.peer.tcp_connect_blocking(self.victim_ip, self.ECHO_PORT, timeout=30)
        conn.settimeout(timeout)
        errors: list[BaseException] = []

        def send() -> None:
            try:
                for i in range(0, n, _ECHO_CHUNK):
                    conn.sendall(data[i:i + _ECHO_CHUNK])
                conn.shutdown(socket.SHUT_WR)
            except BaseException as e:  # reported below with the comparison
                errors.append(e)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        got = bytearray()
        try:
            while True:
                chunk = conn.recv(_ECHO_CHUNK)
                if not chunk:
                    break
                got += chunk
        finally:
            sender.join(timeout)
            conn.close()
        if errors:
            raise errors[0]
        return bytes(got) == data, time.monotonic() - t0

    def flood(self, kind: str, size: int, *, count: int = 200_000, seconds: float = 5.0,
              transfer: int = 0, drain_limit: float = 5.0) -> FloodResult:
        """One attacker process against the victim's UDP port (``transfer`` bytes echoed meanwhile)."""
        self.transfer(256 << 10)  # warm: the allocator's arenas hold a transfer's buffers already
        before = self.command("status")
        rss0 = before["rss_kib"] / 1024
        stop = self.tmp / f"stop-{kind}-{size}"
        stop.unlink(missing_ok=True)
        sampler = _RssSampler(self.victim.pid)
        attacker = subprocess.Popen(
            [sys.executable, "-m", "pytsnet.testing.flood", "attack", "--port", str(self.victim_port),
             "--kind", kind, "--size", str(size), "--count", str(count), "--seconds", str(seconds),
             "--stop-file", str(stop), "--victim-key", self.victim_key],
            stdout=subprocess.PIPE, text=True)
        lines = _Lines(attacker)
        ok: bool | None = None
        took: float | None = None
        try:
            assert lines.next(120).get("event") == "started"
            if transfer:
                ok, took = self.transfer(transfer)
            stop.touch()
            done = lines.next(300)
            assert done.get("event") == "done", done
            attacker.wait(30)
            drain = self.command(f"drain {drain_limit}")
            drained = drain["drained_after"]
            after = self.command("status")
        finally:
            stop.touch()
            if attacker.poll() is None:
                attacker.kill()
                attacker.wait(10)
        peak = sampler.stop()
        return FloodResult(
            kind=kind, size=size, sent=done["sent"], attack_seconds=done["seconds"],
            read=_grew(after["counters"], before["counters"]).get("udp_datagrams_read", 0),
            drops=_grew(after["drops"], before["drops"]),
            counters=_grew(after["counters"], before["counters"]),
            rss_before_mib=rss0, rss_peak_mib=peak, drained_after=drained,
            status_seconds=after["status_seconds"], transfer_ok=ok, transfer_seconds=took,
            backlog_after=after["backlog"], backlog_at_end=drain["backlog_at_end"] or {})

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.victim.poll() is None and self.victim.stdin is not None:
                self.victim.stdin.write("quit\n")
                self.victim.stdin.flush()
            self.victim.wait(15)
        if self.victim.poll() is None:
            self.victim.kill()
            self.victim.wait(10)
        self.peer.close()
        self.net.__exit__(None, None, None)

    def __enter__(self) -> FloodRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pytsnet.testing.flood")
    sub = ap.add_subparsers(dest="role", required=True)
    v = sub.add_parser("victim")
    v.add_argument("--control", required=True)
    v.add_argument("--authkey", required=True)
    v.add_argument("--dir", required=True)
    v.add_argument("--hostname", default="victim")
    v.add_argument("--port", type=int, default=7300)
    a = sub.add_parser("attack")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--kind", choices=("transport", "junk", "initiation"), default="transport")
    a.add_argument("--size", type=int, default=1400)
    a.add_argument("--count", type=int, default=200_000)
    a.add_argument("--seconds", type=float, default=5.0)
    a.add_argument("--max-seconds", type=float, default=180.0)
    a.add_argument("--stop-file", default=None)
    a.add_argument("--victim-key", default=None)
    args = ap.parse_args(argv)
    if args.role == "victim":
        _victim(args)
    else:
        _attack(args)


if __name__ == "__main__":
    main()
