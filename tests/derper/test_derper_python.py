"""Python nodes relayed by a standalone derper: localnet hands them the derper's DERP map
(``derp_map=``, as ``localnet --derp-map FILE``), their UDP is cut so DERP is the only path, and a
TCP transfer both ways arrives byte-exact — counted by the derper itself, open or admitting clients
through localnet's ``/derp/admit``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anyio
import pytest

from pytsnet.derper.server import Derper
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import new_device, wait_for_peers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_rig import FAST, Pair, blackhole, exchange, peer_row

N = 1 << 20  # per direction


@contextmanager
def derp_only_pair(tmp: Path, verify: bool) -> Iterator[tuple[Pair, Derper]]:
    """A derper (TLS, self-signed, as a Go test DERP), a localnet whose map names only it, and two
    nodes that cannot use UDP. ``verify``: the derper admits by localnet's ``/derp/admit``; without
    it the map goes in through the constructor (the ``--derp-map`` path)."""
    with ExitStack() as stack:
        if verify:
            net = stack.enter_context(LocalTailnet(tmp / "control", listen="127.0.0.1:0", relay=False))
            d = stack.enter_context(Derper("127.0.0.1:0", tls="self-signed", stun_port=0,
                                           verify_client_url=f"{net.control_url}/derp/admit"))
            net.set_derp_map(d.derp_map())
        else:
            d = stack.enter_context(Derper("127.0.0.1:0", tls="self-signed", stun_port=0))
            net = stack.enter_context(LocalTailnet(tmp / "control", listen="127.0.0.1:0",
                                                   derp_map=d.derp_map()))
        assert net.relay is None  # localnet's own relay is not running: the derper is the only one
        devs = []
        for name in ("alpha", "beta"):
            dev = new_device(net, tmp, name, advertise_endpoints=False, timings=FAST,
                             stun_interval=(2.0, 3.0))
            stack.callback(dev.close)
            devs.append(dev.start())
            blackhole(dev, True)
        for dev, other in ((devs[0], "beta"), (devs[1], "alpha")):
            dev.wait_until_running_blocking(30)
            wait_for_peers(dev, [other])
        yield Pair(net, devs[0], devs[1]), d


@pytest.mark.parametrize("verify", [False, True], ids=["open", "verify-client-url"])
def test_tcp_both_ways_through_standalone_derper(tmp_path: Path, verify: bool) -> None:
    with derp_only_pair(tmp_path, verify) as (p, d):
        x = anyio.run(exchange, p, N)
        assert x.got_ab == x.sent_ab and x.got_ba == x.sent_ba
        for dev in (p.a, p.b):
            row = peer_row(dev)
            assert row.path == "derp" and row.derp_region == 900, row  # type: ignore[attr-defined]
            assert row.udp_bytes_out == 0 and row.udp_bytes_in == 0, row  # type: ignore[attr-defined]
        assert p.a.status().derp_connected == {900: True}
        s = d.stats()
        for dev in (p.a, p.b):
            k = s["keys"][p.net.node(dev.config.hostname).node_key]
            # the megabyte each way crossed this relay (WireGuard adds its overhead on top)
            assert k["bytes_from"] > N and k["bytes_to"] > N, (dev.config.hostname, k)
        assert s["accepted"] >= 2 and s["rejected_verify"] == 0, s
        if verify:
            assert s["admission"]["allowed"] >= 2 and s["admission"]["errors"] == 0, s
            assert p.net.admit is not None and p.net.admit.allowed >= 2
        else:
            assert "admission" not in s
        # netcheck's STUN goes to the derper's STUN port too (the answers are cut with the rest of UDP)
        wait_until(lambda: d.stats()["stun"]["requests"] > 0, 10, "STUN requests at the derper")
