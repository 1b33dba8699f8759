"""Helpers for attacking an assembled device: actor liveness snapshots, counters, memory, a health probe.

The two-device tailnet itself comes from ``tests/e2e/e2e_rig.py`` (imported, not copied).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_rig import Pair, exchange, make_device, tailnet_pair

from pytsnet.device import ActorDevice
from pytsnet.messages.magicsock import LocalAddr, LocalAddrRequest
from pytsnet.testing.polling import wait_until

__all__ = ["Liveness", "Pair", "actor", "healthy_exchange", "make_device", "rss_mb", "silence_netstack",
           "tailnet_pair", "udp_port", "wait_until"]


def actor(dev: ActorDevice, name: str) -> Any:
    """The running actor instance behind ``name`` (tests only: to read counters no message exposes)."""
    assert dev.system is not None
    ref = dev.system.lookup(name)
    assert ref is not None, f"{name} not running"
    return ref._cell.actor


def silence_netstack(dev: ActorDevice) -> None:
    """Make ``dev`` a mute attacker: plaintext from its tunnel no longer reaches its netstack, so it
    never answers a SYN-ACK (not even with a RST); its engine counts those packets as ``no_sink``."""
    engine = actor(dev, "wgengine")
    engine._sink_name = "silenced (no such actor)"
    engine._sink = None


def udp_port(dev: ActorDevice) -> int:
    """The loopback port of ``dev``'s magicsock UDP socket."""
    assert dev.system is not None
    ref = dev.system.lookup("magicsock.udp")
    assert ref is not None
    la: LocalAddr = ref.ask(LocalAddrRequest(), timeout=5)
    return int(la.addr.rsplit(":", 1)[1])


class Liveness:
    """Every actor of a device with its incarnation, to show an attack killed or restarted none."""

    def __init__(self, dev: ActorDevice) -> None:
        self.dev = dev
        self.before = self._snapshot()

    def _snapshot(self) -> dict[str, int]:
        sys_ = self.dev.system
        assert sys_ is not None
        out = {}
        for name in sys_.names():
            ref = sys_.lookup(name)
            if ref is not None and ref.is_alive and "-tcp-" not in name:
                out[name] = ref.incarnation
        return out

    def assert_unharmed(self) -> None:
        """The same long-lived actors, none restarted (a restart means a handler crashed)."""
        after = self._snapshot()
        missing = sorted(set(self.before) - set(after))
        assert not missing, f"actors gone after the attack: {missing}"
        restarted = {n: (self.before[n], after[n]) for n in self.before if after[n] != self.before[n]}
        assert not restarted, f"actors restarted (crashed) during the attack: {restarted}"


def rss_mb() -> float:
    """This process's resident set (both devices and the tailnet live in it), MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def healthy_exchange(pair: Pair, n: int = 128 << 10, port: int = 7100) -> None:
    """``n`` bytes each way at once, byte-exact: the data plane still works."""
    x = anyio.run(functools.partial(exchange, pair, n, port=port))
    assert x.got_ab == x.sent_ab and x.got_ba == x.sent_ba, "bytes differ"
