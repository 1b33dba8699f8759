""""Running" needs the data plane too: a DERP home connection (or a live peer), as in Go."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import RegistrationTimeout
from pytsnet.localnet.relay import derp_map
from pytsnet.localnet.server import LocalTailnet


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_not_running_until_derp_home_connects(tmp_path: Path) -> None:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        dead = _dead_port()
        net.set_derp_map(derp_map("127.0.0.1", dead, dead))  # a DERP map whose only region is down
        dev = ActorDevice(Config(dir=tmp_path / "a", hostname="a", auth_key=net.create_authkey(),
                                 control_url=net.control_url, bind_host="127.0.0.1", backoff_max=1.0)).start()
        try:
            with pytest.raises(RegistrationTimeout):
                dev.wait_until_running_blocking(3)
            assert dev.state.state == "Starting" and dev.tailscale_ips()  # registered, netmap in hand
            assert dev.status().derp_connected == {900: False}
            assert net.relay is not None
            net.set_derp_map(net.relay.derp_map)  # the real relay: a new DERP map rebuilds the data plane
            dev.wait_until_running_blocking(15)
            assert dev.status().derp_connected == {900: True}
        finally:
            dev.close()
