"""Chaos: the cert manager (``cert``) killed while an ACME order is under way, on a node whose certs
come from pebble through localnet's set-dns (a namespace with no route out).

The ask waiting for the order gets a typed ``AcmeFailed`` saying to ask again (never a hang); the
actor restarts (permanent child of ``node``), the killed incarnation's order still finishes on its
worker thread and the next incarnation stores it; asking again gets a cert that verifies to pebble's
root, and the rest of the node never noticed (control still Running)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from cryptography import x509

from pytsnet.actors.runtime import FaultInjector
from pytsnet.errors import AcmeFailed
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.acme import pebble_available, pebble_stack
from pytsnet.testing.netns import Netns
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import new_device

pytestmark = [pytest.mark.root, pytest.mark.interop]

WEB = "web.localnet.ts.net"


def test_killing_the_cert_manager_mid_order_is_survived(netns: Netns, tmp_path: Path) -> None:
    reason = pebble_available()
    if reason:
        pytest.skip(reason)
    with netns.entered(), pebble_stack(netns, tmp_path / "pebble") as ca, \
            LocalTailnet(tmp_path / "control", https=True, dns01_api=ca.dns01_api) as net:
        dev = new_device(net, tmp_path, "web", acme_directory_url=ca.directory_url,
                         acme_ca_file=str(ca.tls_ca_file))
        try:
            dev.start().wait_until_running_blocking(30)
            assert dev.system is not None
            ref = dev.system.lookup("cert")
            assert ref is not None
            first = ref.incarnation
            outcome: dict[str, BaseException | tuple[bytes, bytes]] = {}

            def ask() -> None:
                try:
                    outcome["r"] = dev.cert_pair_blocking(WEB, timeout=60)
                except BaseException as e:
                    outcome["r"] = e

            # hold the order at set-dns (localnet publishes the record only once the gate opens), so the
            # kill lands mid-order every time
            assert net.control is not None and net.control.dns01 is not None
            sink, gate, held = net.control.dns01, threading.Event(), threading.Event()
            publish = sink.publish

            async def gated(name: str, value: str) -> None:
                held.set()
                await asyncio.get_running_loop().run_in_executor(None, gate.wait, 30)
                await publish(name, value)

            sink.publish = gated  # type: ignore[method-assign]
            t = threading.Thread(target=ask)
            t.start()
            assert held.wait(20), "the order reached set-dns"
            FaultInjector.kill_now(ref)
            t.join(30)
            assert not t.is_alive(), "the waiting ask must not hang"
            gate.set()
            r = outcome["r"]
            assert isinstance(r, AcmeFailed) and "ask again" in str(r), r
            wait_until(lambda: ref.incarnation > first and ref.is_alive, 10, "cert restarted")
            # the killed incarnation's order finishes and the new one stores it: no second order needed
            wait_until(lambda: dev.cert_status().counters["issued"] == 1, 30, "the old order is stored")
            cert, _key = dev.cert_pair_blocking(WEB, timeout=60)
            assert dev.cert_status().counters["orders"] == 0  # (counters are per incarnation)
            store = x509.verification.Store(x509.load_pem_x509_certificates(ca.issuer_root()))
            chain = x509.load_pem_x509_certificates(cert)
            x509.verification.PolicyBuilder().store(store).build_server_verifier(
                x509.DNSName(WEB)).verify(chain[0], chain[1:])
            assert dev.state.state == "Running"
        finally:
            dev.close()
