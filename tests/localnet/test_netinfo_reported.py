"""A node tells control what its netcheck found, in Go's ``Hostinfo.NetInfo`` (magicsock
``updateNetInfo``): UDP works, IPv6 does not (off by default), DERP latency keyed ``"<region>-v4"``,
``PreferredDERP`` its home; read back from the local control server's store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytsnet.actors.dataplane.bridge import net_info_facts
from pytsnet.messages.control import NetInfoFacts
from pytsnet.messages.magicsock import NetcheckReport
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import local_tailnet

pytestmark = pytest.mark.timeout(120)


def test_netcheck_findings_reach_control_as_go_netinfo(tmp_path: Path) -> None:
    with local_tailnet(tmp_path, ["alpha"]) as tn:
        def netinfo() -> dict[str, Any]:
            [node] = tn.net.store.nodes()
            ni = node.hostinfo.get("NetInfo")
            return ni if isinstance(ni, dict) else {}

        wait_until(lambda: "WorkingUDP" in netinfo() and netinfo().get("DERPLatency"), 30,
                   "NetInfo with the netcheck's findings at control")
        ni = netinfo()
        [node] = tn.net.store.nodes()
        assert node.home_derp and ni["PreferredDERP"] == node.home_derp, (ni, node.home_derp)
        assert ni["WorkingUDP"] is True and ni["WorkingIPv6"] is False, ni
        assert "OSHasIPv6" not in ni, ni  # IPv6 off: not looked at (Go's unset opt.Bool)
        latency = ni["DERPLatency"]
        assert set(latency) == {f"{node.home_derp}-v4"} and 0 < latency[f"{node.home_derp}-v4"] < 5, latency


def test_a_reports_fields_as_netinfo_facts() -> None:
    """Untried mapping protocols and IPv6 left unlooked-at stay unset (Go's empty ``opt.Bool``);
    latencies do not count in the comparison that decides whether to tell control again."""
    rep = NetcheckReport(udp=True, global_v4="203.0.113.5:41641", preferred_derp=900,
                         region_latency={900: 0.002}, mapping_varies_by_dest_ip=False,
                         derp_latency={"900-v4": 0.002}, have_port_map=True,
                         portmap_protocols={"pmp": False, "upnp": True})
    facts = net_info_facts(rep)
    assert facts == NetInfoFacts(working_udp=True, working_ipv6=False, os_has_ipv6=None,
                                 mapping_varies_by_dest_ip=False, have_port_map=True, upnp=True, pmp=False,
                                 pcp=None, derp_latency={"900-v4": 0.002})
    moved = net_info_facts(rep.model_copy(update={"derp_latency": {"900-v4": 0.009}}))
    assert moved is not None and moved != facts and moved.basic() == facts.basic()
    assert net_info_facts(None) is None
