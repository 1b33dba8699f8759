"""What the loopback proxy costs: one TCP download from a tailnet peer, direct vs through it.

Usage: ``.venv/bin/python bench/loopback.py [--mib 16] [--runs 3]``. A ``LocalTailnet`` on 127.0.0.1
and two ``ActorDevice`` s in this process (one GIL: absolute numbers are lower than two processes');
``web`` sends ``--mib`` MiB to each connection on tailnet port 9000 and closes. Interleaved per run:
``direct`` (``alpha.tcp_connect_blocking("web", 9000)``, the app's own dial), ``socks5`` (a raw
SOCKS5 client through ``alpha.loopback()``) and ``http-connect`` (a CONNECT tunnel on the same port).
Reported: the median MB/s of each, and the load average next to it (the machine is shared).
"""

from __future__ import annotations

import argparse
import base64
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.net import SocketLike

PORT = 9000
CHUNK = 65536


def _serve(web: ActorDevice, n: int, stop: threading.Event) -> None:
    lst = web.listen_blocking(PORT)
    lst.settimeout(0.5)
    blob = bytes(CHUNK)

    def one(c: SocketLike) -> None:
        try:
            left = n
            while left:
                c.sendall(blob[:min(left, CHUNK)])
                left -= min(left, CHUNK)
        finally:
            c.close()

    while not stop.is_set():
        try:
            conn, _ = lst.accept()
        except (TimeoutError, OSError):
            continue
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def _drain(recv: object, n: int) -> float:
    t0, got = time.monotonic(), 0
    while chunk := recv(CHUNK):  # type: ignore[operator]
        got += len(chunk)
    assert got == n, (got, n)
    return n / (time.monotonic() - t0) / 1e6


def _socks(addr: tuple[str, int], cred: str) -> socket.socket:
    s = socket.create_connection(addr)
    s.sendall(b"\x05\x01\x02")
    assert s.recv(2) == b"\x05\x02"
    s.sendall(b"\x01\x05tsnet" + bytes([len(cred)]) + cred.encode())
    assert s.recv(2) == b"\x01\x00"
    s.sendall(b"\x05\x01\x00\x03\x03web" + PORT.to_bytes(2, "big"))
    assert s.recv(10)[:2] == b"\x05\x00"
    return s


def _connect(addr: tuple[str, int], cred: str) -> socket.socket:
    s = socket.create_connection(addr)
    auth = base64.b64encode(f"tsnet:{cred}".encode()).decode()
    s.sendall(f"CONNECT web:{PORT} HTTP/1.1\r\nHost: web:{PORT}\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
              .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    n = args.mib << 20
    with tempfile.TemporaryDirectory() as tmp, LocalTailnet(Path(tmp) / "control") as net:
        def dev(name: str) -> ActorDevice:
            return ActorDevice(Config(dir=Path(tmp) / name, hostname=name, auth_key=net.create_authkey(),
                                      control_url=net.control_url, bind_host="127.0.0.1")).start()
        alpha, web = dev("alpha"), dev("web")
        stop = threading.Event()
        try:
            alpha.wait_until_running_blocking(30)
            web.wait_until_running_blocking(30)
            threading.Thread(target=_serve, args=(web, n, stop), daemon=True).start()
            host, port, cred = *alpha.loopback()[0].rsplit(":", 1), alpha.loopback()[1]
            addr = (host, int(port))
            _drain(alpha.tcp_connect_blocking("web", PORT).recv, n)  # warm-up (direct path, caches)
            rows: dict[str, list[float]] = {"direct": [], "socks5": [], "http-connect": []}
            for _ in range(args.runs):
                rows["direct"].append(_drain(alpha.tcp_connect_blocking("web", PORT).recv, n))
                with _socks(addr, cred) as s:
                    rows["socks5"].append(_drain(s.recv, n))
                with _connect(addr, cred) as s:
                    rows["http-connect"].append(_drain(s.recv, n))
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(f"{args.mib} MiB download from a tailnet peer, median of {args.runs} (load {load})")
            for k, v in rows.items():
                runs = ", ".join(f"{x:.1f}" for x in v)
                print(f"  {k:13s} {statistics.median(v):7.1f} MB/s   runs: {runs}")
        finally:
            stop.set()
            alpha.close()
            web.close()


if __name__ == "__main__":
    main()
