"""SYN cookie encoding: round trip, forged / other-flow / expired cookies rejected, key rotation,
options carried in the timestamp (sans-IO, simulated time)."""

from __future__ import annotations

import ipaddress
import random
import secrets

import pytest

from pytsnet.netstack.tcp import syncookie
from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection, ts_offset
from pytsnet.netstack.tcp.segment import ACK, SYN, TcpSegment
from pytsnet.netstack.tcp.syncookie import MSS_TABLE, SynCookies

ME = ipaddress.IPv4Address("100.64.0.2")
PEER = ipaddress.IPv4Address("100.64.0.1")
FLOW = (ME, 80, PEER, 40000)


class CountingKeys:
    """A deterministic key source that records each key it hands out."""

    def __init__(self) -> None:
        self.rng = random.Random(7)
        self.issued: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        key = self.rng.randbytes(n)
        self.issued.append(key)
        return key


def test_round_trip_for_every_mss_index_and_isn() -> None:
    jar = SynCookies(key_source=CountingKeys())
    for index in range(len(MSS_TABLE)):
        for isn in (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 123456789):
            cookie = jar.make(*FLOW, isn, index, now=10.0)
            assert jar.check(*FLOW, isn, cookie, now=10.5) == index


def test_cookie_for_another_flow_or_client_isn_is_rejected() -> None:
    jar = SynCookies(key_source=CountingKeys())
    cookie = jar.make(*FLOW, 5000, 2, now=0.0)
    assert jar.check(ME, 80, PEER, 40001, 5000, cookie, now=0.0) is None  # another source port
    assert jar.check(ME, 81, PEER, 40000, 5000, cookie, now=0.0) is None  # another listener
    assert jar.check(ME, 80, ipaddress.IPv4Address("100.64.0.9"), 40000, 5000, cookie, now=0.0) is None
    assert jar.check(*FLOW, 5001, cookie, now=0.0) is None  # another client ISN


def test_forged_cookies_are_rejected() -> None:
    jar = SynCookies(key_source=CountingKeys())
    cookie = jar.make(*FLOW, 5000, 1, now=0.0)
    jar.make(*FLOW, 5000, 1, now=70.0)  # two live keys: a forgery gets two chances
    # Nudging the low bits only moves the MSS index (as on Linux: that flow's own MSS, harmless).
    assert [jar.check(*FLOW, 5000, (cookie + d) & 0xFFFFFFFF, now=70.0) for d in (-2, -1, 1, 2, 3)] == \
        [None, 0, 2, 3, None]
    for delta in (1 << 8, 1 << 16, 1 << 24, 1 << 31, 0x55555555):
        assert jar.check(*FLOW, 5000, (cookie + delta) & 0xFFFFFFFF, now=70.0) is None, delta
    rng = random.Random(3)
    accepted = sum(jar.check(*FLOW, 5000, rng.getrandbits(32), now=70.0) is not None for _ in range(100_000))
    assert accepted == 0  # odds of any: 100_000 * 2 * 4 / 2**32


def test_cookie_expires_after_max_age_periods() -> None:
    keys = CountingKeys()
    jar = SynCookies(period=64.0, max_age=2, key_source=keys)
    cookie = jar.make(*FLOW, 9, 3, now=63.9)  # end of period 0
    assert jar.check(*FLOW, 9, cookie, now=64.1) == 3  # period 1: still valid
    assert jar.check(*FLOW, 9, cookie, now=127.9) == 3
    assert jar.check(*FLOW, 9, cookie, now=128.0) is None  # period 2: its key is gone
    assert jar.check(*FLOW, 9, cookie, now=1000.0) is None
    assert jar.validity == 128.0


def test_keys_rotate_per_period_and_old_ones_are_forgotten() -> None:
    keys = CountingKeys()
    jar = SynCookies(period=10.0, max_age=2, key_source=keys)
    c0 = jar.make(*FLOW, 1, 0, now=1.0)
    assert jar.make(*FLOW, 1, 0, now=2.0) == c0  # same period, same key
    c1 = jar.make(*FLOW, 1, 0, now=11.0)
    c2 = jar.make(*FLOW, 1, 0, now=21.0)
    assert len(keys.issued) == 3 and len(set(keys.issued)) == 3
    assert len({c0, c1, c2}) == 3
    assert jar.check(*FLOW, 1, c0, now=21.0) is None and jar.check(*FLOW, 1, c1, now=21.0) == 0
    assert len(jar._keys) == 2
    assert all(k.hex() not in repr(jar) and repr(k) not in repr(jar) for k in keys.issued)


def test_default_key_source_is_the_secrets_module() -> None:
    jar = SynCookies()
    assert jar._key_source is secrets.token_bytes
    jar.make(*FLOW, 1, 0, now=0.0)
    [key] = jar._keys.values()
    assert len(key) == 32


@pytest.mark.parametrize("peer_mss,index", [(100, 0), (536, 0), (1219, 0), (1220, 1), (1239, 1),
                                            (1240, 2), (1459, 2), (1460, 3), (9000, 3)])
def test_mss_index_rounds_down(peer_mss: int, index: int) -> None:
    assert syncookie.mss_index(peer_mss) == index


def test_timestamp_options_round_trip_and_never_move_the_clock_forward() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        tsval = rng.getrandbits(32)
        ws = rng.choice([None, *range(15)])
        sack = rng.random() < 0.5
        enc = syncookie.encode_ts_options(tsval, ws, sack)
        assert syncookie.decode_ts_options(enc) == (ws, sack)
        back = (tsval - enc) & 0xFFFFFFFF
        assert 0 <= back <= syncookie.TS_OPT_MASK * 2 + 1  # rounded down by at most 63 ms


def test_cookie_synack_and_the_connection_its_ack_completes() -> None:
    cfg = TcpConfig(recv_buffer=1 << 20)
    syn = TcpSegment(40000, 80, 777, 0, SYN, 65535, mss=1240, wscale=7, sack_permitted=True,
                     timestamp=(5555, 0))
    synack = TcpConnection.cookie_synack(syn, (ME, 80), 0xABCDEF01, 3.0, cfg)
    assert synack.flags == SYN | ACK and synack.seq == 0xABCDEF01 and synack.ack == 778
    assert synack.mss == 1240 and synack.wscale == 5 and synack.sack_permitted  # 1 MiB needs shift 5
    assert synack.timestamp is not None and synack.timestamp[1] == 5555
    assert syncookie.decode_ts_options(synack.timestamp[0]) == (7, True)
    assert synack.timestamp[0] <= (3000 + ts_offset(0xABCDEF01)) & 0xFFFFFFFF
    ack = TcpSegment(40000, 80, 778, 0xABCDEF02, ACK, 100, timestamp=(5556, synack.timestamp[0]),
                     payload=b"first bytes")
    conn = TcpConnection.from_cookie(ack, (ME, 80), (PEER, 40000), 0xABCDEF01, 1240, 3.1, cfg)
    assert conn is not None and conn.state.value == "ESTABLISHED"
    assert conn.recv(100) == b"first bytes"
    assert (conn._snd_wscale, conn._rcv_wscale, conn._sack_ok, conn._ts_ok) == (7, 5, True, True)
    assert conn._snd_wnd == 100 << 7
    # Our next segment's timestamp is not older than the SYN-ACK's (the peer's PAWS would drop it).
    [seg] = conn.poll(3.2)
    assert seg.timestamp is not None and seg.timestamp[0] >= synack.timestamp[0]
    # An echoed timestamp from the future, or asking for an option we turned off: no connection.
    future = TcpSegment(40000, 80, 778, 0xABCDEF02, ACK, 100, timestamp=(5556, synack.timestamp[0] + 10**6))
    assert TcpConnection.from_cookie(future, (ME, 80), (PEER, 40000), 0xABCDEF01, 1240, 3.1, cfg) is None
    assert TcpConnection.from_cookie(ack, (ME, 80), (PEER, 40000), 0xABCDEF01, 1240, 3.1,
                                     TcpConfig(sack=False)) is None


def test_cookie_synack_without_peer_timestamps_offers_no_scale_or_sack() -> None:
    syn = TcpSegment(40000, 80, 777, 0, SYN, 65535, mss=1240, wscale=7, sack_permitted=True)
    synack = TcpConnection.cookie_synack(syn, (ME, 80), 99, 0.0)
    assert synack.wscale is None and not synack.sack_permitted and synack.timestamp is None
    conn = TcpConnection.from_cookie(TcpSegment(40000, 80, 778, 100, ACK, 4000), (ME, 80), (PEER, 40000),
                                     99, 1240, 0.1)
    assert conn is not None and (conn._snd_wscale, conn._sack_ok, conn._ts_ok) == (0, False, False)
