"""Funnel with a real certificate: inside a namespace with no route out, localnet (``--https`` with
DNS-01 through pebble-challtestsrv, ``--funnel``), pebble as the ACME CA, a Python node whose
``listen_funnel(443)`` gets its cert from pebble (``cert_pair``), and a plain ``curl --cacert <pebble
root>`` on the namespace's host side reaching it through the ingress: TLS verified against pebble's
root, and refused without it."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from pytsnet.funnel import FunnelStream
from pytsnet.testing.netns import Netns
from pytsnet.testing.pebble_tailnet import pebble_tailnet
from pytsnet.testing.polling import wait_until

pytestmark = pytest.mark.timeout(180)


def test_curl_verifies_a_pebble_cert_through_the_funnel(netns: Netns, tmp_path: Path) -> None:
    with pebble_tailnet(netns, tmp_path, funnel="127.0.0.1:0") as rig:
        ingress = rig.net.funnel
        assert ingress is not None
        web = rig.device("web")
        web.wait_until_running_blocking(30)
        name = web.state.name.rstrip(".")
        wait_until(lambda: ingress.sees(name), 30, "the ingress sees web")
        root = rig.root
        port = ingress.address[1]

        async def serve(s: FunnelStream) -> None:
            try:
                req = b""
                while b"\r\n\r\n" not in req:
                    req += await s.receive()
                body = f"hello {s.src[0]} funnel={s.funnel}".encode()
                await s.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                             + body)
                await s.aclose()
            except anyio.BrokenResourceError:
                pass  # the untrusting curl below aborts its handshake

        async def main() -> tuple[str, int]:
            ln = await web.listen_funnel(443)  # the node's own cert, ordered from pebble now
            async with ln, anyio.create_task_group() as tg:
                async def accept_all() -> None:
                    while True:
                        tg.start_soon(serve, await ln.accept())

                tg.start_soon(accept_all)
                base = ["curl", "-sS", "--max-time", "30", "--resolve", f"{name}:{port}:127.0.0.1",
                        f"https://{name}:{port}/"]
                ok = await anyio.run_process([*base[:1], "--cacert", str(root), *base[1:]], check=False)
                untrusted = await anyio.run_process(base, check=False)
                tg.cancel_scope.cancel()
            assert ok.returncode == 0, ok.stderr.decode()
            return ok.stdout.decode(), untrusted.returncode

        body, refused = anyio.run(main)
        assert body == "hello 127.0.0.1 funnel=True"
        assert refused == 60  # CURLE_PEER_FAILED_VERIFICATION: the verification is real
        assert web.cert_status().counters.get("issued", 0) >= 1  # pebble issued it (not a stand-in)
