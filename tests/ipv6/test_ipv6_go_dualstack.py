"""Python ↔ Go on a dual-stack underlay with IPv4 UDP dropped between the two nodes (Go tsnet needs
an IPv4 interface up, so no IPv6-only cell for it). localnet listens on ``::`` in the hub (control,
DERP and STUN reachable over both families); its DERP map names the hub's IPv4 and IPv6.

What happens is recorded in ``docs`` (issue 24 point 4): the transfer completes byte-exact whatever
the path; the path each side took (ours from status, Go's from its ``magicsock: disco: node …
now using`` log line) is printed and asserted to be one the setup allows — direct over IPv6 or DERP,
never direct over IPv4 (dropped).
"""

from __future__ import annotations

import re
import socket
import sys
import time
from pathlib import Path

import anyio
import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.relay import GO_PLAIN_HTTP_ENV
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing import gonode
from pytsnet.testing.polling import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ipv6_rig import FAST_NODE, HUB4_N1, HUB_N1, N1, N1_4, N2, N2_4, Lab

BODY = "hello from go over ipv6"
NOW_USING = re.compile(r"magicsock: disco: node \[[^\]]+\] d:\w+ now using (\S+)")  # keys: base64 (+, /)


def _host(addr: str) -> str:
    return addr.rsplit(":", 1)[0].strip("[]")


def test_python_and_go_dual_stack_ipv4_udp_blocked(tmp_path: Path) -> None:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    lab = Lab(dual=True)
    lab.block(f"ip saddr {N1_4} ip daddr {N2_4} meta l4proto udp")
    lab.block(f"ip saddr {N2_4} ip daddr {N1_4} meta l4proto udp")
    with lab.hub.entered():  # one dual-stack listener (asyncio would make a "::" one IPv6-only)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", 0))
        sock.listen(128)
    net = LocalTailnet(tmp_path / "c", listen="[::]:0", ipv6=True, keepalive_interval=5, ephemeral_grace=1,
                       sock=sock)
    dev: ActorDevice | None = None
    try:
        with lab.hub.entered():
            net.start()
        assert net.relay is not None
        net.set_derp_map({"Regions": {"900": {
            "RegionID": 900, "RegionCode": "local", "RegionName": "lab",
            "Nodes": [{"Name": "900a", "RegionID": 900, "HostName": HUB4_N1, "IPv4": HUB4_N1, "IPv6": HUB_N1,
                       "STUNPort": net.relay.stun.port, "DERPPort": net.port, "InsecureForTests": True}]}}})
        url = f"http://{HUB4_N1}:{net.port}"
        key = net.create_authkey(reusable=True)
        with lab.n1.entered():
            dev = ActorDevice(Config(dir=tmp_path / "py", hostname="pynode", auth_key=key, control_url=url,
                                     ipv6=True, **FAST_NODE)).start()
        env = gonode.go_env(tmp_path / "home-go", GO_PLAIN_HTTP_ENV)
        go = gonode.caddy_run(lab.n2, "gosrv", gonode.serving_caddyfile(url, key, tmp_path / "gosrv", "gosrv",
                                                                        BODY, debug=True), tmp_path, env)
        dev.wait_until_running_blocking(30)
        wait_until(lambda: any(n.hostname == "gosrv" and n.ipv4 for n in net.nodes()), 60,
                   "gosrv registered")
        go_ip = next(n.ipv4 for n in net.nodes() if n.hostname == "gosrv")
        wait_until(lambda: len(dev.status().peers) == 1, 30, "pynode sees gosrv")

        async def get() -> bytes:
            return await gonode.http_get(dev, go_ip, 80)  # type: ignore[union-attr]

        for _ in range(3):
            body = anyio.run(get)
            assert body.endswith(BODY.encode()), (body, go.log_tail())
        end = time.monotonic() + 15
        while time.monotonic() < end and dev.status().peers[0].path != "direct":
            anyio.run(get)
            time.sleep(0.5)
        row = dev.status().peers[0]
        go_paths = NOW_USING.findall(go.log())
        print(f"\npython -> go: path={row.path} addr={row.addr} derp_out={row.derp_bytes_out}"
              f" udp_out={row.udp_bytes_out}\ngo 'now using': {go_paths}")
        # observed here every run: both go direct over IPv6 (the IPv4 UDP between them is dropped)
        assert row.path == "direct" and row.addr is not None and _host(row.addr) == N2, row
        end = time.monotonic() + 30  # Go picks its path when it pings us: keep it talking until it does
        while time.monotonic() < end and not NOW_USING.findall(go.log()):
            anyio.run(get)
            time.sleep(0.5)
        assert NOW_USING.findall(go.log()), go.log_tail()
        assert all(_host(p) == N1 for p in NOW_USING.findall(go.log())), go.log_tail()
    finally:
        if dev is not None:
            dev.close()
        gonode.stop_all(lab.n2)
        net.close()
        lab.close()
