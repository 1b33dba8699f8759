"""The TUN link in burst mode (issue 14, 1,000 flows): flows hand it ``IpPacketsOut``, its reader hands
the netstack ``IpPacketsIn``, and the bytes still arrive whole and in order both ways."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import threading

import pytest
from netstack_actors_rig import KERNEL, STACK

from pytsnet.actors.runtime import ActorSystem, MailboxConfig
from pytsnet.messages.wgengine import IpPacketOut
from pytsnet.net import Netstack
from pytsnet.net.link import TunLinkActor
from pytsnet.netstack.config import StackConfig
from pytsnet.testing.netns import Netns
from pytsnet.testing.tun import open_tun

pytestmark = [pytest.mark.interop, pytest.mark.root]

SIZE = 2 * 1024 * 1024


def test_bursts_both_ways_carry_every_byte(netns: Netns) -> None:
    data = hashlib.shake_256(b"bursts").digest(SIZE)
    tun = open_tun(netns, local=KERNEL, peer=STACK)
    srv = netns.call(lambda: socket.create_server((KERNEL, 9400)))
    echoed: list[bytes] = []

    def echo() -> None:  # read everything, then send it back: bulk both ways
        c, _ = srv.accept()
        with c:
            got = bytearray()
            while len(got) < SIZE and (chunk := c.recv(65536)):
                got += chunk
            c.sendall(got)
            echoed.append(bytes(got))

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    system = ActorSystem("link-bursts", pool_workers=2)
    try:
        link = system.spawn(TunLinkActor, tun.fd, "netstack", name="tun-link", mailbox=MailboxConfig(65536))
        cfg = StackConfig(addresses=(ipaddress.ip_address(STACK),))
        net = Netstack.start(system, cfg, link, out_message=IpPacketOut)
        with net.create_connection((KERNEL, 9400), timeout=30) as s:
            s.settimeout(60)
            s.sendall(data)
            back = bytearray()
            while len(back) < SIZE and (chunk := s.recv(65536)):
                back += chunk
        t.join(30)
        actor = link._cell.actor
        assert isinstance(actor, TunLinkActor)
        assert echoed == [data] and bytes(back) == data
        assert actor.bursts_written > 0, "flows never handed the link a burst"
        assert actor.bursts_read > 0, "the reader never handed the netstack a burst"
    finally:
        system.shutdown()
        tun.close()
        srv.close()
