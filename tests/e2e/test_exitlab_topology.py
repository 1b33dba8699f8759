"""The exit lab's topology is what the exit-node tests rely on (``pytsnet.testing.exitlab``)."""

from __future__ import annotations

import socket
from pathlib import Path

import dns.resolver
import pytest

from pytsnet.testing.exitlab import (
    ECHO_PORT,
    HUB_ADDR,
    INTERNET_ADDR,
    SUBNET_SERVER,
    WEB_NAME,
    WEB_PORT,
    exit_lab,
)
from pytsnet.testing.netns import Netns, netns_available

pytestmark = [pytest.mark.interop, pytest.mark.root]


def reaches(ns: Netns, host: str, port: int) -> bool:
    def probe() -> bool:
        try:
            socket.create_connection((host, port), timeout=2).close()
            return True
        except OSError:
            return False
    return ns.call(probe)


@pytest.mark.parametrize("client_route", [False, True])
def test_lab_routes(tmp_path: Path, client_route: bool) -> None:
    if reason := netns_available():
        pytest.skip(reason)
    with exit_lab(tmp_path, client_route=client_route) as lab:
        assert reaches(lab.exit, INTERNET_ADDR, WEB_PORT) and reaches(lab.exit, SUBNET_SERVER, ECHO_PORT)
        assert reaches(lab.client, INTERNET_ADDR, WEB_PORT) is client_route  # only the capture variant
        assert not reaches(lab.client, SUBNET_SERVER, ECHO_PORT)
        for node in (lab.client, lab.exit):  # the tailnet's servers' address answers both nodes
            assert node.run(["ping", "-c", "1", "-W", "2", HUB_ADDR], check=False).returncode == 0
        # the exit namespace's resolv.conf (ip netns exec bind-mounts it) names the lab's DNS server
        script = f"import socket; print(socket.gethostbyname({WEB_NAME!r}))"
        got = lab.exit.run(["python3", "-c", script], check=False)
        assert got.stdout.strip() == INTERNET_ADDR, got.stderr
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [INTERNET_ADDR]
        with pytest.raises(dns.resolver.NXDOMAIN):
            lab.exit.call(lambda: r.resolve("nothing.example.test", "A"))
