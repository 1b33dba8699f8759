"""``PacketFd``: a TUN-style packet fd drained (and written) a burst at a time under one GIL hold.

A SOCK_SEQPACKET socketpair stands in for the TUN: one read is one packet, as on a TUN fd.
"""

from __future__ import annotations

import os
import socket

import pytest

from pytsnet.net.packetfd import PacketFd


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def test_refuses_a_blocking_fd() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b, pytest.raises(ValueError):
        PacketFd(a.fileno())


@pytest.mark.parametrize("hold_gil", [True, False])
def test_reads_every_queued_packet_in_order_up_to_the_limit(hold_gil: bool) -> None:
    a, b = _pair()
    with a, b:
        io = PacketFd(a.fileno(), hold_gil=hold_gil)
        assert io.gil_held is hold_gil  # libc loads here
        assert io.read_burst(10) == []  # nothing queued: no error, no wait
        sent = [bytes([i]) * (i + 1) for i in range(100)]
        for p in sent:
            b.send(p)
        assert io.read_burst(60) == sent[:60]
        assert io.read_burst(1000) == sent[60:]
        assert io.read_burst(1000) == []


@pytest.mark.parametrize("hold_gil", [True, False])
def test_writes_a_burst_and_counts_refusals_as_drops(hold_gil: bool) -> None:
    a, b = _pair()
    with a, b:
        io = PacketFd(a.fileno(), hold_gil=hold_gil)
        burst = [b"p%d" % i for i in range(50)]
        assert io.write_burst(burst) == 50
        assert [b.recv(100) for _ in range(50)] == burst
        # A full socket buffer refuses writes: counted as not written, no exception.
        written = io.write_burst([bytes(60000)] * 200)
        assert 0 < written < 200


def test_read_error_other_than_nothing_queued_raises() -> None:
    a, b = _pair()
    io = PacketFd(a.fileno())
    a.close()
    b.close()
    with pytest.raises(OSError):
        io.read_burst(4)


def test_the_fd_is_left_as_it_was() -> None:
    a, b = _pair()
    with a, b:
        PacketFd(a.fileno()).read_burst(1)
        assert not os.get_blocking(a.fileno())
