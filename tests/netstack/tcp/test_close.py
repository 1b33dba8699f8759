"""Every close path of RFC 9293 §3.6, observed as state sequences on both ends."""

from tcp_sim import LinkParams, Sim

from pytsnet.netstack.tcp.connection import TcpConfig, TcpState
from pytsnet.netstack.tcp.errors import ConnectionAborted, ConnectionReset
from pytsnet.netstack.tcp.segment import ACK, FIN, RST, TcpSegment

S = TcpState


class StateLog:
    """Records each distinct state of both ends as the simulation runs."""

    def __init__(self) -> None:
        self.a: list[TcpState] = []
        self.b: list[TcpState] = []

    def __call__(self, sim: Sim) -> None:
        for conn, log in ((sim.a, self.a), (sim.b, self.b)):
            if conn is not None and (not log or log[-1] is not conn.state):
                log.append(conn.state)


def established(**kw: object) -> tuple[Sim, StateLog]:
    sim = Sim(cfg_a=TcpConfig(time_wait=10.0), cfg_b=TcpConfig(time_wait=10.0), **kw)  # type: ignore[arg-type]
    log = StateLog()
    sim.run(Sim.established, log)
    return sim, log


def both_closed(sim: Sim) -> bool:
    return sim.a.is_closed and sim.b.is_closed


def logged(log: StateLog, cond: object) -> object:
    """Wrap an until-condition so the state reached in the final poll is logged too."""
    def until(sim: Sim) -> bool:
        log(sim)
        return cond(sim)  # type: ignore[operator]
    return until


def test_active_close_passive_close() -> None:
    sim, log = established()
    sim.a.send(b"last words")
    sim.a.close()
    sim.run(lambda s: s.b.state is S.CLOSE_WAIT and s.a.state is S.FIN_WAIT_2, log)
    assert sim.b.recv(100) == b"last words" and sim.b.recv(100) == b"" and sim.b.at_eof
    sim.b.close()
    sim.run(logged(log, both_closed), log)
    assert log.a == [S.SYN_SENT, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.TIME_WAIT, S.CLOSED]
    assert log.b == [S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT, S.LAST_ACK, S.CLOSED]
    fin_wait_end = max(t.t for t in sim.trace)
    assert sim.now >= fin_wait_end + 10.0  # TIME_WAIT lasted 2*MSL (config: 10 s)
    assert sim.a.error is None and sim.b.error is None


def test_simultaneous_close_goes_through_closing() -> None:
    sim, log = established()
    sim.a.close()
    sim.b.close()
    sim.run(logged(log, both_closed), log)
    for side in (log.a, log.b):
        assert side[-4:] == [S.FIN_WAIT_1, S.CLOSING, S.TIME_WAIT, S.CLOSED]


def test_fin_and_ack_together_skip_fin_wait_2() -> None:
    """Our FIN is acknowledged by the peer's FIN segment: FIN-WAIT-1 -> TIME-WAIT directly."""
    sim, _log = established(link=LinkParams(delay=0.01))
    sim.a.close()
    sim.poll()
    now = sim.now + 0.001
    ack_seq, our_fin_end = sim.a.time_wait_state()[1], sim.a.time_wait_state()[0]
    sim.a.on_segment(TcpSegment(80, 40000, ack_seq, our_fin_end, FIN | ACK, 100), now)
    assert sim.a.state is S.TIME_WAIT


def test_half_close_peer_keeps_sending() -> None:
    sim, log = established()
    sim.a.shutdown_write()
    data = bytes(range(256)) * 4000
    sent = [0]
    got = bytearray()

    def app(s: Sim) -> None:
        log(s)
        if sent[0] < len(data) and s.b.writable:
            sent[0] += s.b.send(data[sent[0]:])
        elif sent[0] == len(data):
            s.b.shutdown_write()
        if s.a.readable:
            got.extend(s.a.recv(1 << 20))
    sim.run(lambda s: s.a.at_eof and both_closed(s), app)
    assert bytes(got) == data
    assert log.a[2:4] == [S.FIN_WAIT_1, S.FIN_WAIT_2]
    assert S.CLOSE_WAIT in log.b


def test_lost_final_ack_makes_time_wait_reack_the_fin() -> None:
    state = {"dropped": 0}

    def drop(direction: int, seg: TcpSegment) -> bool:
        # Drop the first ACK a sends after b's FIN.
        if direction == 0 and seg.flags == ACK and state["armed"] and not state["dropped"]:
            state["dropped"] = 1
            return True
        return False
    state["armed"] = 0
    sim, log = established(link=LinkParams(drop_fn=drop))
    sim.a.close()
    sim.run(lambda s: s.a.state is S.FIN_WAIT_2, log)
    state["armed"] = 1
    sim.b.close()
    sim.run(logged(log, both_closed), log)
    assert state["dropped"] == 1
    fins_from_b = [t for t in sim.trace if t.direction == 1 and t.seg.flags & FIN]
    assert len(fins_from_b) == 2  # LAST-ACK retransmitted its FIN after RTO; TIME-WAIT ACKed it
    assert log.b[-2:] == [S.LAST_ACK, S.CLOSED]


def test_close_with_unread_data_resets_peer() -> None:
    sim, log = established()
    sim.b.send(b"unread")
    sim.run(lambda s: s.a.recv_buffered == 6, log)
    sim.a.close()
    assert sim.a.is_closed
    sim.run(lambda s: s.b.is_closed, log)
    assert isinstance(sim.b.error, ConnectionReset)
    assert [t.seg.flags for t in sim.trace if t.seg.flags & RST] == [RST | ACK]


def test_abort_sends_rst_and_peer_sees_reset() -> None:
    sim, log = established()
    sim.a.send(b"x" * 5000)
    sim.a.abort()
    assert isinstance(sim.a.error, ConnectionAborted)
    sim.run(lambda s: s.b.is_closed, log)
    assert isinstance(sim.b.error, ConnectionReset)
    assert isinstance(sim.b.error, ConnectionResetError)


def test_data_after_close_triggers_rst() -> None:
    sim, log = established()
    sim.a.close()
    sim.run(lambda s: s.a.state is S.FIN_WAIT_2, log)
    sim.b.send(b"nobody will read this")
    sim.run(lambda s: s.b.is_closed, log)
    assert isinstance(sim.b.error, ConnectionReset)


def test_orphaned_fin_wait_2_times_out() -> None:
    sim = Sim(cfg_a=TcpConfig(fin_wait_2_timeout=5.0))
    sim.run(Sim.established)
    sim.a.close()
    sim.run(lambda s: s.a.is_closed)  # b never closes
    assert sim.b.state is S.CLOSE_WAIT and sim.a.error is None and 5.0 < sim.now < 6.0
