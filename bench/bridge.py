"""The socket bridge's cost: a bulk transfer over a bridged flow vs the same flow without the bridge.

Run: ``.venv/bin/python bench/bridge.py [--mib 16] [--runs 3]`` (~20 s, no root). Two devices on a
LocalTailnet over loopback (direct UDP path). ``raw``: ``tcp_connect_blocking`` to ``listen_blocking``
(the netstack's channels only). ``bridge``: ``connect_socket`` to ``listen_socket`` — both ends
bridged, so each byte crosses two socketpairs and four splice threads more. Runs alternate; the
median MB/s of each is printed with the load average.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.polling import wait_until

CHUNK = 65536


def _drain(conn: object, out: dict[str, int]) -> None:
    n = 0
    while data := conn.recv(CHUNK):  # type: ignore[attr-defined]
        n += len(data)
    conn.close()  # type: ignore[attr-defined]
    out["n"] = n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    total = args.mib << 20
    tmp = Path(tempfile.mkdtemp())
    with LocalTailnet(tmp / "control", listen="127.0.0.1:0") as net:
        devs = [ActorDevice(Config(dir=tmp / n, hostname=n, auth_key=net.create_authkey(),
                                   control_url=net.control_url, bind_host="127.0.0.1")).start()
                for n in ("alpha", "beta")]
        try:
            a, b = devs
            for d in devs:
                d.wait_until_running_blocking(20)
            wait_until(lambda: all(len(d.status().peers) == 1 for d in devs), 20, "peers")
            ip = a.tailscale_ips()[0]
            raw, bridged = a.listen_blocking(7301), a.listen_socket(7302)
            buf = b"x" * CHUNK
            rates: dict[str, list[float]] = {"raw": [], "bridge": []}
            for _ in range(args.runs):
                for mode in ("raw", "bridge"):
                    got: dict[str, int] = {}
                    lst = raw if mode == "raw" else bridged
                    t = threading.Thread(target=lambda lst=lst, got=got: _drain(lst.accept()[0], got))
                    t.start()
                    c = b.tcp_connect_blocking(ip, 7301) if mode == "raw" else b.connect_socket(ip, 7302)
                    t0 = time.monotonic()
                    for _ in range(total // CHUNK):
                        c.sendall(buf)
                    c.shutdown(1)
                    t.join()
                    rates[mode].append(total / (time.monotonic() - t0) / 1e6)
                    c.close()
                    assert got["n"] == total, (mode, got)
            load = Path("/proc/loadavg").read_text().split()[0]
            for mode, rs in rates.items():
                print(f"{mode:7s} median {statistics.median(rs):6.1f} MB/s  runs "
                      f"{' '.join(f'{r:.1f}' for r in rs)}  (load {load})")
        finally:
            for d in devs:
                d.close()


if __name__ == "__main__":
    main()
