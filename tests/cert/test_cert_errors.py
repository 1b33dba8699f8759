"""The typed failures of certificates and ListenTLS, on loopback with no ACME server at all: HTTPS not
enabled (no CertDomains, no ``https`` capability), a domain that is not the node's, an ACME server that
cannot be reached (``AcmeFailed``, no key material in the message), and the LocalAPI's answers."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import AcmeFailed, DataplaneNotReady, HttpsNotEnabled, InvalidCertDomain, LocalApiError
from pytsnet.localapi.server import LocalRequest
from pytsnet.testing.tailnet import local_tailnet


def _caps(dev) -> list[str]:  # type: ignore[no-untyped-def]
    info = dev.dataplane_info()
    assert info.netmap is not None
    return info.netmap.capabilities.get(info.netmap.self_node.node_id, [])


def test_https_not_enabled(tmp_path: Path) -> None:
    with local_tailnet(tmp_path, ["web"]) as tn:
        web = tn["web"]
        assert web.cert_domains() == []
        assert "https" not in _caps(web)
        with pytest.raises(HttpsNotEnabled, match="localnet: --https"):
            web.cert_pair_blocking("web.localnet.ts.net")
        with pytest.raises(HttpsNotEnabled):
            anyio.run(web.listen_tls, 443)
        with pytest.raises(LocalApiError, match="HTTPS is not enabled") as e:
            web.local_client().cert_pair("web.localnet.ts.net")
        assert e.value.status == 500  # Go's serveCert answers every failure 500
        assert web.cert_status().counters["orders"] == 0


def test_https_enabled_wrong_domain_and_unreachable_acme(tmp_path: Path) -> None:
    with local_tailnet(tmp_path, ["web", "alpha"], net_options={"https": True}) as tn:
        web = tn["web"]
        assert web.cert_domains() == ["web.localnet.ts.net"]
        assert tn["alpha"].cert_domains() == ["alpha.localnet.ts.net"]
        assert "https" in _caps(web)
        for bad in ("alpha.localnet.ts.net", "../web.localnet.ts.net", "web", ""):
            with pytest.raises(InvalidCertDomain):
                web.cert_pair_blocking(bad)
        assert web.cert_status().counters["orders"] == 0  # refused before any ACME traffic
        # the test fixtures point TS_DEBUG_ACME_DIRECTORY_URL at a closed loopback port
        with pytest.raises(AcmeFailed, match="ACME directory") as e:
            web.cert_pair_blocking("web.localnet.ts.net", timeout=30)
        assert "PRIVATE KEY" not in str(e.value)
        st = web.cert_status()
        assert st.counters["orders"] == 1 and st.counters["failed"] == 1, st
        # the account key was made and kept (Go makes it before the first order), nothing else cached
        assert web.store.read_state("acme-account.key.pem")
        assert not web.store.read_state("web.localnet.ts.net.crt")


def test_localapi_cert_route(tmp_path: Path) -> None:
    with local_tailnet(tmp_path, ["web"], net_options={"https": True}) as tn:
        api = tn["web"].local_api()
        bad_type = api.handle(LocalRequest("GET", "/localapi/v0/cert/web.localnet.ts.net", {"type": "pem"}),
                              permit_read=True, permit_write=True)
        assert bad_type.status == 400
        denied = api.handle(LocalRequest("GET", "/localapi/v0/cert/web.localnet.ts.net", {"type": "pair"}),
                            permit_read=True, permit_write=False)
        assert (denied.status, denied.body) == (403, b"cert access denied\n")
        other = api.handle(LocalRequest("GET", "/localapi/v0/cert/alpha.localnet.ts.net", {}),
                           permit_read=True, permit_write=True)
        assert other.status == 500 and b"may only get certs for" in other.body


def test_no_netmap_yet_is_not_ready(tmp_path: Path) -> None:
    with ActorDevice(Config(dir=tmp_path / "n", hostname="n", control_url="http://127.0.0.1:9",
                            auth_key="tskey-x", bind_host="127.0.0.1")) as dev:
        dev.start()
        with pytest.raises(DataplaneNotReady, match="wait until Running"):
            dev.cert_pair_blocking("n.localnet.ts.net")
        assert dev.cert_domains() == []
