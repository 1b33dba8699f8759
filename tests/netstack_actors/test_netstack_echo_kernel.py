"""Our netstack's own echo request (the LocalAPI's ICMP ping) answered by the Linux kernel over a TUN.

The netstack actor sends the echo (``IcmpEchoStart``), the kernel's ICMP replies, and the reply's
round trip comes back on ``IcmpEchoPoll``; with the kernel ignoring echoes the request stays
outstanding until the asker gives up (``IcmpEchoCancel``), and a late reply is then ignored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from netstack_actors_rig import KERNEL, Rig, netstack_rig

from pytsnet.messages.netstack import (
    IcmpEchoCancel,
    IcmpEchoPoll,
    IcmpEchoResult,
    IcmpEchoStart,
    NetstackStatusRequest,
)
from pytsnet.testing.netns import Netns

pytestmark = [pytest.mark.interop, pytest.mark.root, pytest.mark.timeout(60)]


@pytest.fixture
def rig(netns: Netns) -> Iterator[Rig]:
    with netstack_rig(netns) as r:
        yield r


def _wait(rig: Rig, ident: int, seq: int, within: float) -> IcmpEchoResult:
    ref = rig.system.lookup("netstack")
    assert ref is not None
    deadline = time.monotonic() + within
    while True:
        got = ref.ask(IcmpEchoPoll(dst=KERNEL, ident=ident, seq=seq), timeout=5)
        if got.done or time.monotonic() >= deadline:
            return got
        time.sleep(0.01)


def test_kernel_answers_our_echo(rig: Rig) -> None:
    ref = rig.system.lookup("netstack")
    assert ref is not None
    sent = ref.ask(IcmpEchoStart(dst=KERNEL, ident=0x1234, seq=1, data=b"pytsnet"), timeout=5)
    assert sent == IcmpEchoResult()  # sent, not yet answered
    got = _wait(rig, 0x1234, 1, 5)
    assert got.done and not got.error and got.latency is not None and 0 <= got.latency < 5


def test_ignored_echo_stays_outstanding_then_cancelled(rig: Rig) -> None:
    rig.ns.sh("sysctl -qw net.ipv4.icmp_echo_ignore_all=1")
    ref = rig.system.lookup("netstack")
    assert ref is not None
    ref.ask(IcmpEchoStart(dst=KERNEL, ident=7, seq=7), timeout=5)
    assert not _wait(rig, 7, 7, 1.0).done  # Go: no reply, the asker's timeout decides
    ref.tell(IcmpEchoCancel(dst=KERNEL, ident=7, seq=7))
    rig.ns.sh("sysctl -qw net.ipv4.icmp_echo_ignore_all=0")
    ref.ask(IcmpEchoStart(dst=KERNEL, ident=8, seq=8), timeout=5)  # the kernel answers again
    assert _wait(rig, 8, 8, 5).done


def test_no_address_of_the_family_is_an_error(rig: Rig) -> None:
    ref = rig.system.lookup("netstack")
    assert ref is not None
    got = ref.ask(IcmpEchoStart(dst="fd7a:115c:a1e0::1", ident=1, seq=1), timeout=5)
    assert got.done and "no local address" in got.error
    assert ref.ask(NetstackStatusRequest(), timeout=5).drops.get("icmp_ignored", 0) == 0
