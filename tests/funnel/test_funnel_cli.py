"""``pytsnet localnet --funnel HOST:PORT`` as a separate process: a Python node joins it, opens a
Funnel listener, and a plain ``curl`` on the host reaches it through the ingress (TLS verified
against the test CA that issued the node's certificate)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
import trustme

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.funnel import FunnelListener

pytestmark = pytest.mark.timeout(120)


def test_localnet_funnel_flag_end_to_end(tmp_path: Path) -> None:
    state = tmp_path / "net"
    cli = [sys.executable, "-m", "pytsnet", "localnet", "--state", str(state)]
    p = subprocess.Popen([*cli, "--https", "--funnel", "127.0.0.1:0"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        lines = [p.stdout.readline().strip()]  # type: ignore[union-attr]
        while not lines[-1].startswith("localnet Funnel ingress: ") and len(lines) < 6:
            lines.append(p.stdout.readline().strip())  # type: ignore[union-attr]
        assert lines[0].startswith("localnet control server: http://127.0.0.1:"), lines
        banner = lines[-1]
        assert banner.startswith("localnet Funnel ingress: 127.0.0.1:") and banner.endswith("port 443"), lines
        control_url = lines[0].split(": ", 1)[1]
        pub_port = int(banner.split(": ", 1)[1].split(" ")[0].rsplit(":", 1)[1])
        key = subprocess.run([*cli, "authkey", "create"], capture_output=True, text=True, check=True,
                             timeout=60).stdout.strip()
        ca = trustme.CA()
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))

        def provide(domain: str) -> tuple[bytes, bytes]:
            cert = ca.issue_cert(domain)
            return b"".join(c.bytes() for c in cert.cert_chain_pems), cert.private_key_pem.bytes()

        cfg = Config(dir=tmp_path / "site", hostname="site", auth_key=key, control_url=control_url,
                     bind_host="127.0.0.1", backoff_max=1.0)
        with ActorDevice(cfg) as dev:
            async def main() -> str:
                ln: FunnelListener = await dev.listen_funnel(443, cert_provider=provide, timeout=60)
                name = dev.state.name.rstrip(".")

                async def serve() -> None:
                    s = await ln.accept()
                    req = b""
                    while b"\r\n\r\n" not in req:
                        req += await s.receive()
                    body = f"hello {s.src[0]} via funnel={s.funnel}".encode()
                    await s.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                    await s.aclose()

                def curl() -> str:
                    for _ in range(40):  # the ingress learns of us with its next map: retry until then
                        out = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file),
                                              "--resolve", f"{name}:{pub_port}:127.0.0.1",
                                              f"https://{name}:{pub_port}/"], capture_output=True, text=True)
                        if out.returncode == 0:
                            return out.stdout
                        time.sleep(0.25)
                    raise AssertionError(out.stderr)

                async with ln, anyio.create_task_group() as tg:
                    tg.start_soon(serve)
                    body = await anyio.to_thread.run_sync(curl)
                return body

            assert anyio.run(main) == "hello 127.0.0.1 via funnel=True"
    finally:
        p.send_signal(2)
        p.wait(timeout=20)
