"""The DERP client over TLS, against the local tailnet's TLS relay (self-signed, Go's meta certificate)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from magicsock_nodes import Node, introduce, make_node, wg

from pytsnet.actors.runtime import ActorRef
from pytsnet.localnet import LocalTailnet
from pytsnet.messages.magicsock import DerpRegion, DerpStatus, DerpStatusRequest
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import NodePrivate


def _known(net: LocalTailnet, hostname: str) -> NodePrivate:
    """A node key the relay admits (it serves only authorized nodes of its tailnet)."""
    key = NodePrivate.generate()
    assert net.control is not None
    net.store.add_node(machine_key="mkey:" + os.urandom(32).hex(), node_key=key.public().to_text(),
                       user_id=net.control.default_user.id, hostname=hostname,
                       authorized=True, ephemeral=False)
    return key


def _status(node: Node) -> DerpStatus:
    ref: ActorRef | None = node.system.lookup(node.config.derp_name(900))
    assert ref is not None
    return ref.ask(DerpStatusRequest(), timeout=5)


def test_derp_over_tls_carries_traffic_and_an_unverifiable_certificate_is_refused(tmp_path: Path) -> None:
    with LocalTailnet(tmp_path, derp_tls=True) as net:
        relay = net.relay
        assert relay is not None and relay.tls
        region = DerpRegion(region_id=900, host="127.0.0.1", port=relay.derp_port, stun_port=relay.stun.port,
                            tls=True, insecure_for_tests=True)
        a = make_node("a", 0, 0, advertise=False, regions=(region,), private=_known(net, "a"))
        b = make_node("b", 0, 0, advertise=False, regions=(region,), private=_known(net, "b"))
        strict = region.model_copy(update={"insecure_for_tests": False})  # the system roots only
        c = make_node("c", 0, 0, advertise=False, regions=(strict,), private=_known(net, "c"))
        try:
            wait_until(lambda: _status(a).connected and _status(b).connected, what="DERP over TLS")
            introduce(a, b)
            wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, what="paths known")
            for i in range(20):
                a.send(b, wg(i))
                b.send(a, wg(100 + i))
            wait_until(lambda: {int.from_bytes(m.data[4:12], "big") for m in list(b.got)} >= set(range(20)),
                       what="A->B over the TLS relay")
            wait_until(lambda: len(a.got) >= 20, what="B->A over the TLS relay")
            assert all(m.via == "derp" for m in [*a.got, *b.got])
            time.sleep(1.0)  # c has had its first dial and a retry by now
            st = _status(c)
            assert not st.connected and st.connects == 0  # the self-signed certificate never passes
            assert "CERTIFICATE_VERIFY_FAILED" in st.last_error
            assert relay.derp.stats.accepted == 2
        finally:
            for n in (a, b, c):
                assert n.system.shutdown(10)
