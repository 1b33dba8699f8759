"""Random segment streams and app calls against a connection: no exception, bounded memory."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tcp_sim import A, B

from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection, TcpState
from pytsnet.netstack.tcp.errors import TcpError
from pytsnet.netstack.tcp.segment import ACK, SYN, TcpSegment

CFG = TcpConfig(send_buffer=8192, recv_buffer=8192, max_ooo_bytes=4096, keepalive_idle=5.0)
M = 0xFFFFFFFF

seg_op = st.tuples(
    st.just("seg"),
    st.integers(-70000, 70000),  # seq offset from what the connection expects
    st.integers(-70000, 70000),  # ack offset from what the connection has sent
    st.integers(0, 0xFF),  # flags
    st.integers(0, 0xFFFF),  # window
    st.binary(max_size=3000),
    st.none() | st.tuples(st.integers(0, M), st.integers(0, M)),
    st.lists(st.tuples(st.integers(-20000, 20000), st.integers(0, 5000)), max_size=4),
)
app_op = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 20000)),
    st.tuples(st.just("recv"), st.integers(-5, 20000)),
    st.tuples(st.just("time"), st.floats(0, 120)),
    st.tuples(st.just("shutdown")),
    st.tuples(st.just("close")),
    st.tuples(st.just("abort")),
)


def run_ops(c: TcpConnection, ops: list[tuple], now: float) -> None:
    for op in ops:
        if op[0] == "seg":
            _, dseq, dack, flags, window, payload, ts, sacks = op
            snd_nxt, rcv_nxt = c.time_wait_state()
            blocks = tuple(((snd_nxt + s) & M, (snd_nxt + s + n) & M) for s, n in sacks)
            c.on_segment(TcpSegment(B[1], A[1], (rcv_nxt + dseq) & M, (snd_nxt + dack) & M, flags, window,
                                    None, None, False, blocks, ts, payload), now)
        elif op[0] == "time":
            now += op[1]
        else:
            try:
                if op[0] == "send":
                    c.send(bytes(op[1]))
                elif op[0] == "recv":
                    c.recv(op[1])
                elif op[0] == "shutdown":
                    c.shutdown_write()
                elif op[0] == "close":
                    c.close()
                else:
                    c.abort()
            except TcpError:
                pass
        out = c.poll(now)
        for s in out:
            assert isinstance(s, TcpSegment) and len(s.payload) <= 1240
        assert c.memory_bytes <= CFG.send_buffer + CFG.recv_buffer
        assert c.recv_buffered <= CFG.recv_buffer
        d = c.next_deadline()
        assert d is None or d >= 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(seg_op, app_op), max_size=40), st.booleans())
def test_random_segments_to_established_connection(ops: list[tuple], active: bool) -> None:
    if active:
        c = TcpConnection.connect(A, B, 1234, 0.0, CFG)
        [syn] = c.poll(0.0)
        c.on_segment(TcpSegment(B[1], A[1], 999, syn.seq + 1, SYN | ACK, 65535, mss=1000, wscale=2,
                                sack_permitted=True, timestamp=(5, syn.timestamp[0])), 0.01)
    else:
        c = TcpConnection.accept(TcpSegment(B[1], A[1], 999, 0, SYN, 65535, mss=1000, sack_permitted=True),
                                 A, B, 1234, 0.0, CFG)
        [synack] = c.poll(0.0)
        c.on_segment(TcpSegment(B[1], A[1], 1000, synack.seq + 1, ACK, 65535), 0.01)
    assert c.state is TcpState.ESTABLISHED
    c.poll(0.01)
    run_ops(c, ops, 0.02)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(seg_op, app_op), max_size=30))
def test_random_segments_during_handshake(ops: list[tuple]) -> None:
    c = TcpConnection.connect(A, B, 77, 0.0, CFG)
    c.poll(0.0)
    run_ops(c, ops, 0.0)


def test_control_queue_bounded_without_polls() -> None:
    c = TcpConnection.accept(TcpSegment(B[1], A[1], 999, 0, SYN, 65535, mss=1000, sack_permitted=True),
                             A, B, 1234, 0.0, CFG)
    [synack] = c.poll(0.0)
    c.on_segment(TcpSegment(B[1], A[1], 1000, synack.seq + 1, ACK, 65535), 0.01)
    for i in range(10_000):  # out-of-order data, each normally answered by its own duplicate ACK
        c.on_segment(TcpSegment(B[1], A[1], 1000 + 2000 + i % 2000, synack.seq + 1, ACK, 65535,
                                payload=b"x"), 0.02)
    assert len(c.poll(0.02)) <= 65
    assert c.memory_bytes <= CFG.max_ooo_bytes
