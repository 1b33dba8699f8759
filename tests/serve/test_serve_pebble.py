"""Serve's HTTPS with the node's own certificate from a real ACME CA (pebble through localnet's
set-dns, 20a), in a namespace with no route out: ``curl --cacert <pebble root>`` through another
node's SOCKS5 proxy verifies Serve's HTTPS web handler and a TLS-terminated TCP forward (to a plain
HTTP backend) with the node's chain. No ``serve_cert_provider``: the certificates come from
``cert_pair_blocking``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytsnet.serve import HTTPHandler, ServeConfig, TCPPortHandler, WebServerConfig
from pytsnet.testing.netns import Netns
from pytsnet.testing.pebble_tailnet import pebble_tailnet, socks_curl
from pytsnet.testing.serve import mirror_backend

pytestmark = [pytest.mark.root, pytest.mark.interop]

WEB = "web.localnet.ts.net"


def test_curl_verifies_serve_https_with_a_pebble_certificate(netns: Netns, tmp_path: Path) -> None:
    with pebble_tailnet(netns, tmp_path) as rig:
        web, alpha = rig.device("web"), rig.device("alpha")
        rig.running(web, alpha)
        assert web.serve_cert_provider is None
        port = rig.stack.enter_context(mirror_backend())
        web.set_serve_config_blocking(ServeConfig(
            TCP={443: TCPPortHandler(HTTPS=True),
                 8443: TCPPortHandler(TCPForward=f"127.0.0.1:{port}", TerminateTLS=WEB)},
            Web={f"{WEB}:443": WebServerConfig(Handlers={"/": HTTPHandler(Text="served with pebble")})}))
        code, body, err = socks_curl(alpha, "--cacert", str(rig.root), f"https://{WEB}/")
        assert (code, body) == (0, "served with pebble"), err
        code, _, _ = socks_curl(alpha, f"https://{WEB}/")  # without the pebble root: verification is real
        assert code == 60
        # the TLS-terminated forward: curl's request reaches the plain-HTTP backend, its answer comes back
        code, body, err = socks_curl(alpha, "--cacert", str(rig.root), f"https://{WEB}:8443/forwarded")
        assert code == 0 and json.loads(body)["path"] == "/forwarded", (code, body, err)
