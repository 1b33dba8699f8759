"""Mailbox byte bounds: payload-carrying messages are weighed, so a queue of big datagrams holds no
more bytes than its bound, whatever its message capacity."""

from __future__ import annotations

import threading

import pytest

from pytsnet.actors.runtime import MailboxConfig, MailboxFull, MailboxPolicy
from pytsnet.actors.runtime.mailbox import Mailbox, payload_size
from pytsnet.messages.magicsock import ITEM_OVERHEAD, WgDatagramsIn, WgDatagramsOut
from pytsnet.messages.runtime import Ping
from pytsnet.messages.wgengine import IpPacketsIn


def test_payload_size_weighs_payload_and_per_datagram_overhead() -> None:
    out = WgDatagramsOut(peer="p", datas=(bytes(1000), b""))
    assert payload_size(out) == 1000 + 2 * ITEM_OVERHEAD
    wg = WgDatagramsIn(via="udp", datas=(bytes(60 << 10),), srcs=("x:1",), peers=(None,))
    assert payload_size(wg) == (60 << 10) + ITEM_OVERHEAD
    assert payload_size(IpPacketsIn(packets=(bytes(3),) * 4)) == 12 + 4 * ITEM_OVERHEAD
    assert payload_size(Ping(seq=1)) == 0  # control-ish messages weigh nothing


def test_drop_newest_by_bytes_long_before_the_message_capacity() -> None:
    mb = Mailbox(MailboxConfig(1000, MailboxPolicy.DROP_NEWEST, max_bytes=100_000))
    kept = sum(mb.put(object(), is_ask=False, size=60_000) for _ in range(5))
    assert kept == 1 and mb.dropped == 4 and mb.dropped_bytes == 240_000
    assert mb.backlog() == (1, 60_000)
    assert mb.put(object(), is_ask=False, size=40_000)  # fits exactly
    assert mb.put(object(), is_ask=True, size=0)  # an ask weighs nothing: status is never refused by bytes
    mb.pop()
    assert mb.backlog() == (2, 40_000)
    mb.pop()
    mb.pop()
    assert mb.backlog() == (0, 0)


def test_an_oversized_message_enters_an_empty_mailbox_only() -> None:
    mb = Mailbox(MailboxConfig(10, MailboxPolicy.FAIL, max_bytes=1000))
    assert mb.put("big", is_ask=False, size=5000)
    with pytest.raises(MailboxFull):
        mb.put("small", is_ask=False, size=1)
    assert mb.pop() == "big" and mb.backlog() == (0, 0)


def test_block_waits_for_bytes_to_drain() -> None:
    mb = Mailbox(MailboxConfig(1000, MailboxPolicy.BLOCK, block_timeout=5.0, max_bytes=1000))
    mb.put("a", is_ask=False, size=800)
    threading.Timer(0.05, mb.pop).start()
    mb.put("b", is_ask=False, size=800)  # blocks until "a" is taken
    assert mb.backlog() == (1, 800)
    full = Mailbox(MailboxConfig(1000, MailboxPolicy.BLOCK, block_timeout=0.01, max_bytes=10))
    full.put("x", is_ask=False, size=8)
    with pytest.raises(MailboxFull):
        full.put("y", is_ask=False, size=5)  # nobody takes "x": the wait times out


def test_drain_resets_the_byte_count() -> None:
    mb = Mailbox(MailboxConfig(10, max_bytes=1000))
    mb.put("a", is_ask=False, size=500)
    assert mb.drain() == ["a"] and mb.backlog() == (0, 0)


def test_bad_byte_bound_refused() -> None:
    with pytest.raises(ValueError):
        MailboxConfig(10, max_bytes=0)
