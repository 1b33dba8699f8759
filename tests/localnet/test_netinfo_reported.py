"""A node tells control what its netcheck found, in Go's ``Hostinfo.NetInfo`` (magicsock
``updateNetInfo``): UDP works, IPv6 does not (off by default), DERP latency keyed ``"<region>-v4"``,
``PreferredDERP`` its home; read back from the local control server's store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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
