"""Real certificates from a real ACME CA (pebble) through localnet's ``/machine/set-dns``, all in a
namespace with no route out: issuance (records through challtestsrv's API and through localnet's own
DNS server), ``curl --cacert <pebble root>`` verifying a ``listen_tls`` server through another node's
SOCKS5 proxy, the cache across a restart (no second order), renewal of a short-lived cert (a real
re-order past 2/3 of its lifetime) and set-dns refusing another node's name."""

from __future__ import annotations

import contextlib
import datetime
import ssl
from pathlib import Path

import anyio
import pytest
from cert_rig import CertRig, cert_rig
from cryptography import x509

from pytsnet.messages.cert import SetDns
from pytsnet.testing.netns import Netns
from pytsnet.testing.polling import wait_until

pytestmark = [pytest.mark.root, pytest.mark.interop]

WEB = "web.localnet.ts.net"


def _leaf(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem)[0]


def _verifies(rig: CertRig, cert_pem: bytes, domain: str) -> None:
    """The chain verifies against pebble's issuing root for ``domain`` (as a TLS client would)."""
    store = x509.verification.Store(x509.load_pem_x509_certificates(rig.ca.issuer_root()))
    chain = x509.load_pem_x509_certificates(cert_pem)
    verifier = (x509.verification.PolicyBuilder().store(store)
                .build_server_verifier(x509.DNSName(domain)))
    verifier.verify(chain[0], chain[1:])


def _issue_and_check(rig: CertRig) -> tuple[bytes, bytes]:
    web = rig.device("web")
    rig.running("web")
    assert web.cert_domains() == [WEB]
    cert, key = web.cert_pair_blocking(WEB, timeout=60)
    _verifies(rig, cert, WEB)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # the key matches the cert (load_cert_chain checks)
    (rig.tmp / "c.pem").write_bytes(cert)
    (rig.tmp / "k.pem").write_bytes(key)
    ctx.load_cert_chain(rig.tmp / "c.pem", rig.tmp / "k.pem")
    st = web.cert_status()
    assert st.counters["orders"] == 1 and st.counters["issued"] == 1, st
    assert rig.net.control is not None and rig.net.control.stats["set_dns"] >= 1
    assert web.local_client().cert_pair(WEB) == (cert, key)  # LocalAPI cert/<domain>?type=pair, as Go's CLI
    return cert, key


def test_cert_through_challtestsrv(netns: Netns, tmp_path: Path) -> None:
    with cert_rig(netns, tmp_path) as rig:
        _issue_and_check(rig)


def test_cert_through_localnet_dns_server(netns: Netns, tmp_path: Path) -> None:
    with cert_rig(netns, tmp_path, own_dns=True) as rig:
        _issue_and_check(rig)
        assert rig.net.dns01_server is not None
        assert rig.net.dns01_server.stats["answered"] >= 1  # pebble resolved the record here
        assert f"_acme-challenge.{WEB}." in rig.net.dns01_server.records


def test_curl_verifies_listen_tls_through_socks5(netns: Netns, tmp_path: Path) -> None:
    with cert_rig(netns, tmp_path) as rig:
        web, alpha = rig.device("web"), rig.device("alpha")
        rig.running("web", "alpha")
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(rig.ca.issuer_root())
        addr, cred, _ = alpha.loopback()

        async def main() -> str:
            lst = await web.listen_tls(8443)
            async with anyio.create_task_group() as tg:
                async def serve() -> None:
                    while True:
                        conn = await lst.accept()
                        await conn.receive()
                        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n"
                                        b"hello tls")
                        await conn.aclose()
                tg.start_soon(serve)
                r = await anyio.run_process(
                    ["curl", "-sS", "--max-time", "60", "--http1.1", "--cacert", str(root),
                     "--socks5-hostname", addr, "--proxy-user", f"tsnet:{cred}", f"https://{WEB}:8443/"],
                    check=False)
                tg.cancel_scope.cancel()
            assert r.returncode == 0, r.stderr.decode()
            return r.stdout.decode()

        with netns.entered():
            assert anyio.run(main) == "hello tls"
        # and curl refuses the same server without the pebble root (verification is real)
        async def untrusted() -> tuple[int, int]:
            lst = await web.listen_tls(8444)
            async with anyio.create_task_group() as tg:
                async def serve_one() -> None:  # the handshake fails on the client's side: counted
                    conn = await lst.accept()
                    with contextlib.suppress(anyio.BrokenResourceError):
                        await conn.receive()
                tg.start_soon(serve_one)
                r = await anyio.run_process(
                    ["curl", "-sS", "--max-time", "30", "--socks5-hostname", addr, "--proxy-user",
                     f"tsnet:{cred}", f"https://{WEB}:8444/"], check=False)
                with anyio.fail_after(10):
                    while lst.handshake_failures == 0:
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
            return r.returncode, lst.handshake_failures

        with netns.entered():
            assert anyio.run(untrusted) == (60, 1)  # CURLE_PEER_FAILED_VERIFICATION; the listener lives on


def test_cached_cert_reused_across_restart(netns: Netns, tmp_path: Path) -> None:
    with cert_rig(netns, tmp_path) as rig:
        cert, key = _issue_and_check(rig)
        rig.devices.pop("web").close()
        web2 = rig.device("web")
        rig.running("web")
        assert web2.cert_pair_blocking(WEB) == (cert, key)
        st = web2.cert_status()
        assert st.counters["orders"] == 0 and st.counters["cache_hits"] == 1, st
        for k in ("acme-account.key.pem", f"{WEB}.crt", f"{WEB}.key"):  # Go's certStateStore names
            assert web2.store.read_state(k), k


def test_short_lived_cert_is_renewed(netns: Netns, tmp_path: Path) -> None:
    life = 15
    with cert_rig(netns, tmp_path, validity=life) as rig:
        cert1, _ = _issue_and_check(rig)
        web = rig.devices["web"]
        leaf1 = _leaf(cert1)
        start, end = leaf1.not_valid_before_utc, leaf1.not_valid_after_utc
        renew_at = start + (end - start) * 2 / 3
        assert web.cert_pair_blocking(WEB)[0] == cert1  # before 2/3: the cache, no order
        assert web.cert_status().counters["orders"] == 1
        wait_until(lambda: datetime.datetime.now(datetime.UTC) > renew_at, life, "past 2/3 of the lifetime")
        assert web.cert_pair_blocking(WEB)[0] == cert1  # still valid: served while renewing (as Go)
        wait_until(lambda: web.cert_status().counters["issued"] == 2, 60, "the renewal order finished")
        st = web.cert_status()
        assert st.counters["orders"] == 2 and st.counters["renewals"] == 1, st
        cert2, _ = web.cert_pair_blocking(WEB)
        leaf2 = _leaf(cert2)
        assert leaf2.serial_number != leaf1.serial_number
        assert leaf2.not_valid_after_utc > leaf1.not_valid_after_utc
        _verifies(rig, cert2, WEB)


def test_set_dns_for_another_nodes_name_is_refused(netns: Netns, tmp_path: Path) -> None:
    with cert_rig(netns, tmp_path) as rig:
        web, _alpha = rig.device("web"), rig.device("alpha")
        rig.running("web", "alpha")
        assert web.system is not None
        control = web.system.lookup("control")
        assert control is not None
        value = "A" * 43
        stats = rig.net.control.stats if rig.net.control is not None else {}
        before = stats["set_dns_refused"]
        refused = (("_acme-challenge.alpha.localnet.ts.net", "TXT"), ("_acme-challenge.evil.test", "TXT"),
                   (WEB, "TXT"), (f"_acme-challenge.{WEB}", "A"))
        for name, typ in refused:
            ans = control.ask(SetDns(name=name, type=typ, value=value), timeout=10)
            assert ans.status in (400, 403), (name, typ, ans)
        bad_value = control.ask(SetDns(name=f"_acme-challenge.{WEB}", value='x" "y'), timeout=10)
        assert bad_value.status == 400
        assert stats["set_dns_refused"] == before + 5
        ok = control.ask(SetDns(name=f"_acme-challenge.{WEB}", value=value), timeout=10)
        assert ok.status == 200, ok  # its own name is accepted


def test_rig_ports_are_distinct_and_a_dead_server_fails_at_once(netns: Netns, tmp_path: Path) -> None:
    """``free_ports`` binds every port before releasing any, so no two servers get the same one (one
    would fail to bind); a server that exits while we wait for it fails the wait at once, with its log."""
    import socket
    import time

    from pytsnet.testing.acme import _wait_tcp, free_ports

    for _ in range(50):
        tcp = free_ports(netns, *[socket.SOCK_STREAM] * 4)
        assert len(set(tcp)) == 4
    log = tmp_path / "dies.log"
    proc = netns.popen(["sh", "-c", "echo bind: address already in use; exit 3"], stdout=log.open("wb"))
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)exited \(3\).*address already in use"):
        _wait_tcp(netns, free_ports(netns, socket.SOCK_STREAM)[0], 20.0, "dies", proc, log)
    assert time.monotonic() - t0 < 5
