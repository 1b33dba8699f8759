"""Serve's HTTPS with the node's own certificate from a real ACME CA (pebble through localnet's
set-dns, 20a), in a namespace with no route out: ``curl --cacert <pebble root>`` through another
node's SOCKS5 proxy verifies Serve's HTTPS web handler and a TLS-terminated TCP forward (to a plain
HTTP backend) with the node's chain. No ``serve_cert_provider``: the certificates come from
``cert_pair_blocking``."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import anyio
import pytest

from pytsnet.localnet.server import LocalTailnet
from pytsnet.serve import HTTPHandler, ServeConfig, TCPPortHandler, WebServerConfig
from pytsnet.testing.acme import pebble_available, pebble_stack
from pytsnet.testing.netns import Netns
from pytsnet.testing.serve import mirror_backend
from pytsnet.testing.tailnet import new_device, wait_for_peers

pytestmark = [pytest.mark.root, pytest.mark.interop]

WEB = "web.localnet.ts.net"


def test_curl_verifies_serve_https_with_a_pebble_certificate(netns: Netns, tmp_path: Path) -> None:
    reason = pebble_available()
    if reason:
        pytest.skip(reason)
    with netns.entered(), ExitStack() as stack:
        ca = stack.enter_context(pebble_stack(netns, tmp_path / "pebble"))
        net = stack.enter_context(LocalTailnet(tmp_path / "control", https=True, dns01_api=ca.dns01_api))
        devs = {}
        for name in ("web", "alpha"):
            dev = new_device(net, tmp_path, name, acme_directory_url=ca.directory_url,
                             acme_ca_file=str(ca.tls_ca_file))
            stack.callback(dev.close)
            devs[name] = dev.start()
        for name, dev in devs.items():
            dev.wait_until_running_blocking(30)
            wait_for_peers(dev, set(devs) - {name})
        web, alpha = devs["web"], devs["alpha"]
        assert web.serve_cert_provider is None
        port = stack.enter_context(mirror_backend())
        web.set_serve_config_blocking(ServeConfig(
            TCP={443: TCPPortHandler(HTTPS=True),
                 8443: TCPPortHandler(TCPForward=f"127.0.0.1:{port}", TerminateTLS=WEB)},
            Web={f"{WEB}:443": WebServerConfig(Handlers={"/": HTTPHandler(Text="served with pebble")})}))
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(ca.issuer_root())
        addr, cred, _ = alpha.loopback()

        def curl(*args: str) -> tuple[int, str, str]:
            out = anyio.run(lambda: anyio.run_process(
                ["curl", "-sS", "--max-time", "90", "--socks5-hostname", addr,
                 "--proxy-user", f"tsnet:{cred}", *args], check=False))
            return out.returncode, out.stdout.decode(errors="replace"), out.stderr.decode(errors="replace")

        code, body, err = curl("--cacert", str(root), f"https://{WEB}/")
        assert (code, body) == (0, "served with pebble"), err
        code, _, _ = curl(f"https://{WEB}/")  # without the pebble root: verification is real
        assert code == 60
        # the TLS-terminated forward: curl's request reaches the plain-HTTP backend, its answer comes back
        code, body, err = curl("--cacert", str(root), f"https://{WEB}:8443/forwarded")
        assert code == 0 and json.loads(body)["path"] == "/forwarded", (code, body, err)
