"""An idle established connection holds no preallocated buffers (issue 14: 10,000 idle flows)."""

from __future__ import annotations

import sys

from tcp_sim import Sim

from pytsnet.netstack.tcp.connection import TcpState


def test_idle_established_connection_is_slotted_and_holds_no_buffers() -> None:
    sim = Sim()
    sim.run(Sim.established)
    for conn in (sim.a, sim.b):
        assert conn is not None and conn.state is TcpState.ESTABLISHED
        assert not hasattr(conn, "__dict__")  # __slots__: no per-instance dict
        assert sys.getsizeof(conn) < 1024  # generous; a __dict__-backed instance cost ~1.6 KiB more
        assert len(conn._rbuf) == 0 and sys.getsizeof(conn._rbuf) < 128  # no preallocated receive buffer
        assert conn._rack is None  # RACK state exists only once data was sent
