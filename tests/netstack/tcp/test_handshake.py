"""Opening: recorded SYN/SYN-ACK/ACK against RFC 9293, RFC 7323 and RFC 2018 requirements."""

import itertools

import pytest
from tcp_sim import A, B, LinkParams, Sim, Transfer

from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection, TcpState
from pytsnet.netstack.tcp.errors import ConnectionRefused, ConnectionTimedOut, TcpStateError
from pytsnet.netstack.tcp.segment import ACK, RST, SYN, TcpSegment


def test_three_way_handshake_segments_and_options() -> None:
    sim = Sim()
    sim.run(Sim.established)
    syn, synack, ack = (t.seg for t in sim.trace[:3])
    # SYN: only SYN set, ISS, MSS from MTU 1280 (IPv4: 1280-20-20), WS so 256 KiB fits, SACK-permitted, TS.
    assert (syn.flags, syn.seq, syn.ack) == (SYN, 0x1000, 0)
    assert syn.mss == 1240 and syn.wscale == 3 and syn.sack_permitted
    assert syn.timestamp is not None and syn.timestamp[1] == 0
    assert syn.window == 0xFFFF  # RFC 7323 §2.2: the SYN's window is never scaled
    assert synack.flags == SYN | ACK and synack.ack == 0x1001 and synack.seq == 0xFFFFF000
    assert synack.mss == 1240 and synack.wscale == 3 and synack.sack_permitted
    assert synack.timestamp is not None and synack.timestamp[1] == syn.timestamp[0]  # TSecr echoes TSval
    assert ack.flags == ACK and ack.seq == 0x1001 and ack.ack == 0xFFFFF001 and not ack.payload
    assert ack.mss is None and ack.wscale is None and not ack.sack_permitted
    assert ack.timestamp is not None and ack.timestamp[1] == synack.timestamp[0]
    # Scaled window after the handshake: 256 KiB >> 3.
    assert ack.window == (256 * 1024) >> 3


def test_synack_only_offers_options_the_syn_had() -> None:
    sim = Sim(cfg_a=TcpConfig(sack=False, timestamps=False, window_scaling=False))
    sim.run(Sim.established)
    synack = sim.trace[1].seg
    assert synack.wscale is None and not synack.sack_permitted and synack.timestamp is None
    data = bytes(300_000)
    tr = Transfer(b"", data)
    sim.run(tr.done, tr)
    assert bytes(tr.got[0]) == data
    assert all(t.seg.window <= 0xFFFF and t.seg.timestamp is None for t in sim.trace)
    # Without window scaling the receive window is capped at 65535 (unscaled).
    assert max(t.seg.window for t in sim.trace if t.direction == 0) == 0xFFFF


def test_peer_window_scale_is_applied() -> None:
    """Data in flight may exceed 65535 bytes only because the peer's window is shifted by its WS."""
    sim = Sim()
    data = bytes(2 << 20)
    tr = Transfer(data, b"")
    max_flight = [0]

    def app(s: Sim) -> None:
        tr(s)
        if s.a is not None and s.a.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
            max_flight[0] = max(max_flight[0], s.a._snd_max - s.a._snd_una)
    sim.run(tr.done, app)
    assert max_flight[0] > 0xFFFF
    assert max_flight[0] <= 256 * 1024


def test_simultaneous_open() -> None:
    sim = Sim(simultaneous=True)
    sim.run(Sim.established)
    flags = [t.seg.flags for t in sim.trace]
    assert flags[:2] == [SYN, SYN]
    assert flags.count(SYN | ACK) == 2  # both went through SYN-RECEIVED
    data = bytes(range(256)) * 400
    tr = Transfer(data, data)
    sim.run(tr.done, tr)
    assert bytes(tr.got[0]) == data and bytes(tr.got[1]) == data


def test_lost_synack_is_recovered() -> None:
    drops = {"n": 0}

    def drop(direction: int, seg: TcpSegment) -> bool:
        if seg.flags == SYN | ACK and drops["n"] < 2:
            drops["n"] += 1
            return True
        return False
    sim = Sim(link=LinkParams(drop_fn=drop))
    sim.run(Sim.established)
    assert drops["n"] == 2


def test_syn_retries_exhausted_times_out_with_backoff() -> None:
    sim = Sim(listen=False, cfg_a=TcpConfig(syn_retries=4), link=LinkParams(drop_fn=lambda d, s: True))
    sim.run(lambda s: s.a.is_closed)
    syn_times = [t.t for t in sim.trace if t.seg.flags == SYN]
    assert len(syn_times) == 5  # the first SYN and 4 retries
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(syn_times)]
    assert gaps == [1.0, 2.0, 4.0, 8.0]  # RFC 6298 §2.1 initial 1 s, §5.5 doubling
    assert isinstance(sim.a.error, ConnectionTimedOut)
    assert sim.now == pytest.approx(1 + 2 + 4 + 8 + 16)
    with pytest.raises(ConnectionTimedOut):
        sim.a.recv(10)


def test_rst_ack_to_syn_is_connection_refused() -> None:
    c = TcpConnection.connect(A, B, 500, 0.0)
    [syn] = c.poll(0.0)
    # An RST whose ACK does not acknowledge our SYN is ignored (RFC 9293 §3.10.7.3)...
    c.on_segment(TcpSegment(B[1], A[1], 0, 999, RST | ACK, 0), 0.01)
    assert c.state is TcpState.SYN_SENT
    # ...and an unacceptable ACK without RST is answered with <SEQ=SEG.ACK><CTL=RST>.
    c.on_segment(TcpSegment(B[1], A[1], 7, 999, ACK, 0), 0.01)
    [rst] = c.poll(0.01)
    assert rst.flags == RST and rst.seq == 999
    c.on_segment(TcpSegment(B[1], A[1], 0, syn.seq + 1, RST | ACK, 0), 0.02)
    assert c.is_closed and isinstance(c.error, ConnectionRefused)
    assert isinstance(c.error, ConnectionRefusedError)


def test_accept_requires_a_plain_syn() -> None:
    with pytest.raises(TcpStateError):
        TcpConnection.accept(TcpSegment(1, 2, 3, 4, SYN | ACK, 10), B, A, 1, 0.0)


def test_data_queued_before_established_is_sent() -> None:
    sim = Sim()
    assert sim.a.send(b"early") == 5
    got = bytearray()

    def app(s: Sim) -> None:
        if s.b is not None and s.b.readable:
            got.extend(s.b.recv(100))
    sim.run(lambda s: bytes(got) == b"early", app)


def test_passive_open_reset_or_timeout_during_handshake() -> None:
    syn = TcpSegment(A[1], B[1], 5000, 0, SYN, 65535, mss=1200)
    c = TcpConnection.accept(syn, B, A, 9000, 0.0, TcpConfig(syn_retries=2))
    [synack] = c.poll(0.0)
    assert synack.flags == SYN | ACK and synack.ack == 5001 and synack.mss == 1240
    assert synack.wscale is None and synack.timestamp is None  # the SYN offered neither
    c.on_segment(TcpSegment(A[1], B[1], 5001, 0, RST, 0), 0.1)
    assert c.is_closed and isinstance(c.error, ConnectionResetError)
    c = TcpConnection.accept(syn, B, A, 9000, 0.0, TcpConfig(synack_retries=2, syn_retries=6))
    times = []
    now = 0.0
    while not c.is_closed:
        times += [now for s in c.poll(now) if s.flags == SYN | ACK]
        now = c.next_deadline() or now
    assert times == [0.0, 1.0, 3.0] and isinstance(c.error, ConnectionTimedOut)


def test_retransmitted_syn_gets_the_synack_again() -> None:
    syn = TcpSegment(A[1], B[1], 5000, 0, SYN, 65535, mss=1200)
    c = TcpConnection.accept(syn, B, A, 9000, 0.0)
    [first] = c.poll(0.0)
    c.on_segment(syn, 0.5)
    [again] = c.poll(0.5)
    assert again == first


def test_after_a_syn_timeout_the_first_data_rto_is_three_seconds() -> None:
    """RFC 6298 §5.7: the SYN was retransmitted (so no RTT sample, Karn): once established the RTO is
    re-initialized to 3 s — not the handshake's backed-off 2 s... 4 s, which let a lost first segment
    wait past the peer's half-open lifetime."""
    lost_first_synacks = {"n": 0}

    def drop(direction: int, seg: TcpSegment) -> bool:
        if direction == 1 and seg.flags == SYN | ACK and lost_first_synacks["n"] < 2:
            lost_first_synacks["n"] += 1
            return True
        return False

    sim = Sim(link=LinkParams(drop_fn=drop))
    sim.run(Sim.established)
    assert sim.a is not None and sim.a.rto_expiries == 2  # the SYN went three times
    assert sim.a._rtt.srtt is None and sim.a._rtt.rto == 3.0
