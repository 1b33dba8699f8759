"""A dial decides on the PeerTracker's table when the device's own copy lags it.

The device keeps a copy of the admitted peers, updated by an event from the PeerTracker; on a loaded
machine that event can arrive after ``peers()`` (which asks the tracker) already shows a new peer or
route. A dial in that window once raised ``UnknownTailnetHost`` for a peer ``peers()`` listed (a
clean-clone run: a subnet route approved, seen in ``peers()``, refused by the next dial). Here the
copy is held back on purpose: the dial still goes through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytsnet.device import ActorDevice
from pytsnet.messages.peers import PeersChanged
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import local_tailnet, new_device

pytestmark = pytest.mark.timeout(120)


def test_a_peer_the_tracker_admitted_is_dialable_before_the_event_arrives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = ActorDevice._on_event
    held: list[Any] = []
    hold: list[ActorDevice] = []

    def late(self: ActorDevice, msg: Any) -> None:
        if self in hold and isinstance(msg, PeersChanged):
            held.append(msg)  # this device's copy of the peer table stops here
            return
        real(self, msg)

    monkeypatch.setattr(ActorDevice, "_on_event", late)  # before the devices bind it
    with local_tailnet(tmp_path, ["alpha", "beta"]) as tn:
        alpha = tn["alpha"]
        hold.append(alpha)
        gamma = new_device(tn.net, tmp_path, "gamma").start()
        try:
            gamma.wait_until_running_blocking(30)
            wait_until(lambda: any(p.hostname == "gamma" for p in alpha.peers()), 30, "tracker admits gamma")
            assert held and "gamma" not in {p.hostname for p in alpha.status().peers}  # the copy lags
            ip = gamma.tailscale_ips()[0]
            assert alpha.resolve(ip) == ip
            lst = gamma.listen_blocking(7300)
            try:
                sock = alpha.tcp_connect_blocking(ip, 7300, timeout=15)
                conn, _ = lst.accept()
                sock.sendall(b"over the tracker's table")
                assert conn.recv(64) == b"over the tracker's table"
                conn.close()
                sock.close()
            finally:
                lst.close()
            with pytest.raises(Exception, match="not an address of any tailnet peer"):
                alpha.resolve("100.127.255.254")  # an address no one has: still refused
        finally:
            gamma.close()
