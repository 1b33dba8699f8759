"""One TCP connection as a sans-IO state machine (RFC 9293), modelled on smoltcp's ``socket/tcp.rs``.

Inputs are parsed segments, app calls and ``now``; outputs are segments from ``poll(now)`` and
``next_deadline()``. Sequence numbers are mapped to unbounded stream offsets at the boundary
(offset 0 is the first data byte, offset -1 the SYN), so the hot path compares plain ints.

Implemented: active/passive/simultaneous open, every close path, RFC 5961 RST/SYN/ACK
validation with rate-limited challenge ACKs, RFC 6298 RTO with Karn and backoff, NewReno fast
recovery (RFC 6582) driven by SACK holes (RFC 2018, RFC 6675-style pipe), RFC 7323 window scale,
timestamps and PAWS, delayed ACK, persist (zero-window probes), keepalive, receiver SWS
avoidance and a receive window tied to what the app has read.

Buffers (issue 14: one per direction per flow): in-order payload goes from the segment into the
``RecvBuffer`` the app reads from, and the window is computed from its length; the app's writes land
in the ``SendBuffer`` retransmissions are cut from. A driver whose app runs on another thread hands
in its own (locking) pair with ``use_buffers``; the connection itself never locks.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from pytsnet.netstack.tcp import syncookie
from pytsnet.netstack.tcp.congestion import DUPACK_THRESHOLD, INITIAL_SSTHRESH, NewReno
from pytsnet.netstack.tcp.cubic import Cubic
from pytsnet.netstack.tcp.errors import (
    ConnectionAborted,
    ConnectionRefused,
    ConnectionReset,
    ConnectionTimedOut,
    TcpConnectionError,
    TcpStateError,
)
from pytsnet.netstack.tcp.hystart import HyStart
from pytsnet.netstack.tcp.rack import Rack, probe_timeout
from pytsnet.netstack.tcp.reassembly import Reassembler
from pytsnet.netstack.tcp.recvbuf import RecvBuffer
from pytsnet.netstack.tcp.rto import RttEstimator
from pytsnet.netstack.tcp.segment import ACK, FIN, MAX_WSCALE, PSH, RST, SYN, TcpSegment
from pytsnet.netstack.tcp.sendbuf import SackScoreboard, SendBuffer
from pytsnet.netstack.tcp.seq import SEQ_MASK, seq_diff, seq_lt

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Endpoint = tuple[IPAddress, int]

DEFAULT_MSS_V4 = 536  # RFC 9293 §3.7.1: assumed when the SYN carries no MSS option
DEFAULT_MSS_V6 = 1220  # RFC 8200 minimum MTU 1280 - 40 - 20
MAX_QUEUED_CONTROL = 64  # control segments kept between two polls
MAX_DUPTHRESH = 24  # cap for the reordering-adapted duplicate-ACK threshold
# Pacing credit, in seconds of the pacing rate. Linux bursts ~1 ms; a flow actor's timer wakes
# up within CPython's 5 ms switch interval at best, and with 1 ms bursts bench/e2e.py direct lost
# 10-15% (the flow sat waiting for late ticks). 10 ms still spreads a slow flow's window
# (bench/flows.py: ~5 KB/s per flow, so the 2-segment floor decides there).
PACING_SLACK = 0.010


CONGESTION_CONTROLS: dict[str, type[NewReno]] = {"cubic": Cubic, "newreno": NewReno}


class TcpState(enum.Enum):
    """RFC 9293 §3.3.2 connection states."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


_S = TcpState
_SYNCHRONIZED = frozenset({_S.ESTABLISHED, _S.FIN_WAIT_1, _S.FIN_WAIT_2, _S.CLOSE_WAIT, _S.CLOSING,
                           _S.LAST_ACK, _S.TIME_WAIT})
_CAN_RECV_DATA = frozenset({_S.ESTABLISHED, _S.FIN_WAIT_1, _S.FIN_WAIT_2})
_CAN_TRANSMIT = frozenset({_S.ESTABLISHED, _S.CLOSE_WAIT, _S.FIN_WAIT_1, _S.CLOSING, _S.LAST_ACK})


@dataclass
class TcpConfig:
    """Per-connection knobs. Buffer sizes bound memory: nothing is buffered beyond them."""

    mtu: int = 1280
    mss: int | None = None  # None: derived from mtu and the IP version
    send_buffer: int = 256 * 1024
    recv_buffer: int = 256 * 1024
    timestamps: bool = True
    sack: bool = True
    window_scaling: bool = True
    delayed_ack: float = 0.04  # 0 disables delayed ACKs
    # Full-sized segments received in order, within one batch from the stack, before an ACK goes
    # out at once (segments arriving one per poll are ACKed every second one, RFC 9293 §3.8.6.3).
    # 2 is the RFC's letter and opens the sender's window finest, but each ACK is a packet on both
    # ends: bench/e2e.py direct went from 14-15 to 10-11 MB/s and 0.033 to 0.053 sender CPU s/MiB;
    # 16 (~20 KB, finer than Linux's GRO batches of up to 64 KB) cost 13.4 MB/s and 0.034.
    ack_every: int = 16
    rto_initial: float = 1.0  # RFC 6298 §2.1
    rto_min: float = 0.2  # Linux's floor; RFC 6298 says 1 s
    rto_max: float = 60.0
    syn_retries: int = 6
    synack_retries: int = 4
    """Passive opens: SYN-ACK retransmissions before a half-open entry is dropped (1+2+4+8+16: ~31 s;
    Linux's 5 keeps it 63 s). Not shorter: a peer whose handshake ACK and first segments are lost
    must still find the entry (at 2, ~7 s, two losses in a row on a 10%-loss link reset it). A SYN
    flood is bounded by ``max_half_open`` and answered with SYN cookies, not by this lifetime."""
    max_retransmits: int = 15  # like Linux tcp_retries2
    time_wait: float = 60.0  # 2*MSL
    fin_wait_2_timeout: float = 60.0  # only once the app has close()d (orphaned)
    max_ooo_bytes: int | None = None  # None: recv_buffer
    keepalive_idle: float | None = None  # None disables keepalive (RFC 9293 §3.8.4: off by default)
    keepalive_interval: float = 75.0
    keepalive_probes: int = 9
    challenge_ack_limit: int = 10  # per second, RFC 5961 §7
    congestion_control: str = "cubic"  # "cubic" (RFC 9438, as Linux and gVisor) or "newreno"
    rack: bool = True  # RACK-TLP loss detection (RFC 8985) when SACK is negotiated
    # Pacing, as Linux's internal pacing: new data leaves at gain * cwnd / SRTT (gain 2 in slow
    # start, 1.2 after), in bursts of at most 2 segments or PACING_SLACK. Spread over the round trip,
    # many flows' segments interleave in a shared queue below them instead of queuing as
    # window-sized blocks that a FIFO serves one flow after another (bench/flows.py).
    pacing: bool = True
    # HyStart++ (RFC 9406) in the first slow start, as Linux's CUBIC has it on. Off: measured, it took
    # 10-15% off bench/e2e.py direct (CPU queueing raises the RTT, slow start ends early, and a 16 MiB
    # transfer is over before CUBIC has grown the window back), and bench/flows.py did not need it
    # once the local congestion signal bounds the queue (docs/performance.md).
    hystart: bool = False
    # Packets (messages) waiting in the queue below the flow (its link sink's mailbox) beyond which
    # the flow driving this connection reports local congestion (``on_local_congestion``), as a
    # NIC's txqueuelen; None: never. Below a deep FIFO that never drops, nothing else stops the
    # windows: 1,000 flows queued ~60,000 packets (tens of seconds) in bench/flows.py.
    local_queue_limit: int | None = 1000

    def __post_init__(self) -> None:
        if self.congestion_control not in CONGESTION_CONTROLS:
            raise ValueError(f"congestion_control must be one of {sorted(CONGESTION_CONTROLS)}")
        if self.ack_every < 1:
            raise ValueError("ack_every must be at least 1")

    def mss_for(self, ip: IPAddress) -> int:
        """MSS to announce: MTU minus IP and TCP fixed headers (RFC 9293 §3.7.1)."""
        if self.mss is not None:
            return self.mss
        return self.mtu - (20 if ip.version == 4 else 40) - 20


def ts_offset(iss: int) -> int:
    """Our TSval clock's offset for a connection with ISN ``iss`` (a SYN cookie's SYN-ACK uses it too)."""
    return (iss * 2654435761) & SEQ_MASK


class TcpConnection:
    """One TCP connection. Drive it with ``on_segment``/app calls, then ``poll(now)``."""

    # Slots, not a __dict__: ~1.5 KiB less per connection, and 10,000 idle flows each hold one.
    __slots__ = (
        "_ack_now", "_app_closed", "_cc", "_chal_count", "_chal_second", "_close_at", "_ctl", "_delack_at",
        "_dirty", "_dsack_rexmits", "_dsack_undo", "_dsacked", "_dupacks", "_dupthresh", "_error", "_fin_off",
        "_fin_received", "_hystart", "_iss", "_ka_probes", "_keepalive_at", "_last_ack_sent", "_last_now",
        "_last_rexmit_tsval", "_last_send", "_lport", "_max_snd_wnd", "_our_mss", "_pace_at", "_pace_wait",
        "_passive", "_payload_max", "_persist_at", "_persist_backoff", "_rack", "_rack_at", "_rbuf",
        "_rcv_adv", "_rcv_base", "_rcv_fin_off", "_rcv_nxt", "_rcv_wscale", "_reasm", "_retries",
        "_rexmit_end", "_rexmit_hi", "_rexmit_lo", "_rexmit_next", "_rport", "_rto_at", "_rto_undo",
        "_rto_undo_tsval", "_rtt", "_rtt_probe", "_sack_ok", "_sbuf", "_scoreboard", "_snd_base", "_snd_max",
        "_snd_mss", "_snd_nxt", "_snd_una", "_snd_wl1", "_snd_wl2", "_snd_wnd", "_snd_wscale", "_state",
        "_syn_pending", "_tlp_at", "_tlp_end", "_ts_offset", "_ts_ok", "_ts_recent", "_unacked_segs", "_undo",
        "_undo_tsval", "_ws_ok", "challenge_acks", "config", "fast_recoveries", "local",
        "local_congestion_signals", "remote", "retransmitted_segments", "rto_expiries", "spurious_recoveries",
        "spurious_rtos", "tail_loss_probes",
    )

    def __init__(self, local: Endpoint, remote: Endpoint, iss: int, now: float,
                 config: TcpConfig | None) -> None:
        cfg = config or TcpConfig()
        self.config = cfg
        self.local = local
        self.remote = remote
        self._lport = local[1]
        self._rport = remote[1]
        self._state = _S.CLOSED
        self._error: TcpConnectionError | None = None
        self._iss = iss & SEQ_MASK
        self._snd_base = (self._iss + 1) & SEQ_MASK  # sequence number of stream offset 0
        self._rcv_base = 0
        self._our_mss = cfg.mss_for(local[0])
        self._snd_mss = DEFAULT_MSS_V4 if local[0].version == 4 else DEFAULT_MSS_V6
        self._payload_max = self._snd_mss
        # Send side (stream offsets).
        self._sbuf = SendBuffer(cfg.send_buffer)
        self._snd_una = -1
        self._snd_nxt = -1
        self._snd_max = -1
        self._snd_wnd = 0
        self._max_snd_wnd = 0
        self._snd_wl1 = -2
        self._snd_wl2 = -2
        self._fin_off: int | None = None  # offset our FIN occupies, once shutdown_write() was called
        self._scoreboard = SackScoreboard()
        self._rexmit_next = 0
        self._rexmit_end = 0
        self._dupacks = 0
        self._dupthresh = DUPACK_THRESHOLD  # raised when reordering made a recovery spurious
        self._undo: tuple[int, int] | None = None  # (cwnd, ssthresh) before the current recovery
        self._undo_tsval: int | None = None  # TSval of that recovery's first retransmission
        self.spurious_recoveries = 0
        # Eifel for timeouts (RFC 4015): (cwnd, ssthresh) before the first RTO of an episode, and the
        # TSval its retransmission carries; the first ACK of new data decides whether it was spurious.
        self._rto_undo: tuple[int, int] | None = None
        self._rto_undo_tsval: int | None = None
        self.spurious_rtos = 0
        self.local_congestion_signals = 0
        self._dsack_undo: tuple[int, int, int, int] | None = None
        self._hystart: HyStart | None = None  # made with the first slow-start ACK, when enabled
        self._pace_at: float | None = None  # when the pacer lets the next new segment go
        self._pace_wait: float | None = None  # set while new data waits for the pacer
        self._dsack_rexmits = 0
        self._dsacked = 0
        self._last_rexmit_tsval: int | None = None
        self._rexmit_lo: int | None = None  # lowest offset retransmitted since all were acknowledged
        self._rexmit_hi = 0  # SND.MAX at the latest retransmission
        self._last_send = now
        self._cc = CONGESTION_CONTROLS[cfg.congestion_control](self._snd_mss)
        self._cc.recover = -1
        self._rack: Rack | None = None  # created on the first data sent, when SACK was negotiated
        self._rack_at: float | None = None  # RACK reordering timer
        self._tlp_at: float | None = None  # tail loss probe timer
        self._tlp_end: int | None = None  # SND.MAX when the outstanding probe went out
        self._rtt = RttEstimator(cfg.rto_initial, cfg.rto_min, cfg.rto_max)
        self._rtt_probe: tuple[int, float] | None = None
        self._retries = 0
        # Receive side.
        self._rbuf = RecvBuffer()
        self._reasm = Reassembler(cfg.max_ooo_bytes if cfg.max_ooo_bytes is not None else cfg.recv_buffer)
        self._rcv_nxt = 0
        self._rcv_adv = 0
        self._rcv_fin_off: int | None = None
        self._fin_received = False
        self._last_ack_sent = 0
        self._unacked_segs = 0
        # Options.
        self._snd_wscale = 0
        self._rcv_wscale = 0
        self._ws_ok = False
        self._ts_ok = False
        self._ts_recent = 0
        self._ts_offset = ts_offset(self._iss)
        self._sack_ok = False
        # Timers (absolute times) and output flags.
        self._rto_at: float | None = None
        self._persist_at: float | None = None
        self._persist_backoff = 0
        self._delack_at: float | None = None
        self._keepalive_at: float | None = None
        self._ka_probes = 0
        self._close_at: float | None = None  # TIME_WAIT expiry or orphaned FIN_WAIT_2 timeout
        self._ack_now = False
        self._syn_pending = False
        self._dirty = True
        self._ctl: list[TcpSegment] = []
        self._passive = False
        self._app_closed = False
        self._chal_second = -1
        self._chal_count = 0
        self._last_now = now
        # Counters for tests, benchmarks and the stack's metrics.
        self.rto_expiries = 0
        self.fast_recoveries = 0
        self.retransmitted_segments = 0
        self.challenge_acks = 0
        self.tail_loss_probes = 0

    # ------------------------------------------------------------------ constructors

    @classmethod
    def connect(cls, local: Endpoint, remote: Endpoint, iss: int, now: float,
                config: TcpConfig | None = None) -> TcpConnection:
        """Active open: the first ``poll`` emits our SYN."""
        c = cls(local, remote, iss, now, config)
        c._state = _S.SYN_SENT
        c._syn_pending = True
        if c.config.window_scaling:
            c._rcv_wscale = c._wscale_for(c.config.recv_buffer)
        return c

    @classmethod
    def accept(cls, syn: TcpSegment, local: Endpoint, remote: Endpoint, iss: int, now: float,
               config: TcpConfig | None = None) -> TcpConnection:
        """Passive open from a listener's SYN: the first ``poll`` emits our SYN-ACK."""
        if not syn.flags & SYN or syn.flags & (ACK | RST):
            raise TcpStateError("accept() needs a segment with SYN set and ACK/RST clear")
        c = cls(local, remote, iss, now, config)
        c._passive = True
        c._state = _S.SYN_RECEIVED
        c._syn_pending = True
        c._on_peer_syn(syn)
        return c

    @classmethod
    def cookie_synack(cls, syn: TcpSegment, local: Endpoint, cookie: int, now: float,
                      config: TcpConfig | None = None) -> TcpSegment:
        """The SYN-ACK a listener sends statelessly, ``cookie`` as its ISN (no connection exists).

        It offers what a passive open would, except that window scale and SACK are only offered
        when the peer sent timestamps: they ride in our TSval (``syncookie.encode_ts_options``).
        """
        cfg = config or TcpConfig()
        ts = ws = None
        sack = False
        if cfg.timestamps and syn.timestamp is not None:
            ws = cls._wscale_for(cfg.recv_buffer) if cfg.window_scaling and syn.wscale is not None else None
            sack = cfg.sack and syn.sack_permitted
            tsval = (int(now * 1000) + ts_offset(cookie)) & SEQ_MASK
            ts = (syncookie.encode_ts_options(tsval, syn.wscale if ws is not None else None, sack),
                  syn.timestamp[0])
        return TcpSegment(syn.dst_port, syn.src_port, cookie & SEQ_MASK, (syn.seq + 1) & SEQ_MASK, SYN | ACK,
                          min(cfg.recv_buffer, 0xFFFF), cfg.mss_for(local[0]), ws, sack, (), ts, b"")

    @classmethod
    def from_cookie(cls, ack: TcpSegment, local: Endpoint, remote: Endpoint, cookie: int, mss: int,
                    now: float, config: TcpConfig | None = None,
                    max_ts_age: float = 128.0) -> TcpConnection | None:
        """The connection a valid cookie ACK completes (ESTABLISHED, with the ACK's data), or None
        when its echoed timestamp cannot be ours (from the future, too old) or asks for an option
        we do not do."""
        cfg = config or TcpConfig()
        ts = None
        ws: int | None = None
        sack = False
        if cfg.timestamps and ack.timestamp is not None:
            tsecr = ack.timestamp[1]
            age = ((int(now * 1000) + ts_offset(cookie)) - tsecr) & SEQ_MASK
            if age > max_ts_age * 1000:
                return None
            ws, sack = syncookie.decode_ts_options(tsecr)
            if (ws is not None and (not cfg.window_scaling or ws > MAX_WSCALE)) or (sack and not cfg.sack):
                return None
            ts = (ack.timestamp[0], 0)
        syn = TcpSegment(ack.src_port, ack.dst_port, (ack.seq - 1) & SEQ_MASK, 0, SYN, 0, mss, ws, sack,
                         (), ts, b"")
        c = cls.accept(syn, local, remote, cookie, now, cfg)
        c._syn_pending = False  # the SYN-ACK went out when the cookie was made
        c._snd_nxt = c._snd_max = 0
        c.on_segment(ack, now)
        return c if c._state in _SYNCHRONIZED else None

    # ------------------------------------------------------------------ public properties

    @property
    def state(self) -> TcpState:
        return self._state

    @property
    def iss(self) -> int:
        """Our initial sequence number (what a peer's ACK of our SYN acknowledges, plus one)."""
        return self._iss

    @property
    def error(self) -> TcpConnectionError | None:
        return self._error

    @property
    def is_closed(self) -> bool:
        return self._state is _S.CLOSED

    @property
    def readable(self) -> bool:
        """``recv`` would return data, EOF, or raise the connection's error."""
        return bool(self._rbuf) or self._fin_received or self._error is not None

    @property
    def fin_received(self) -> bool:
        """The peer's FIN arrived: every byte it sent is in the receive buffer or already read."""
        return self._fin_received

    @property
    def at_eof(self) -> bool:
        """The peer's FIN has been received and every byte before it read."""
        return self._fin_received and not self._rbuf

    @property
    def writable(self) -> bool:
        return (self._fin_off is None and self._error is None and self._sbuf.free > 0
                and self._state in (_S.SYN_SENT, _S.SYN_RECEIVED, _S.ESTABLISHED, _S.CLOSE_WAIT))

    @property
    def send_buffered(self) -> int:
        """Bytes written by the app and not yet acknowledged by the peer."""
        return len(self._sbuf)

    @property
    def recv_buffered(self) -> int:
        """In-order bytes received and not yet read by the app (the receive buffer's length)."""
        return len(self._rbuf)

    @property
    def read_wake_level(self) -> int:
        """Unread bytes at or below which the app's read makes a window update due (``on_read``
        would ACK); -1 when no read can. A driver whose reader is on another thread publishes it so
        the reader wakes the driver only when that read matters (RFC 9293 §3.8.6.2.2)."""
        if self._state not in _CAN_RECV_DATA:
            return -1
        cap = self.config.recv_buffer
        unit = 1 << self._rcv_wscale  # the window field's unit: an offer is rounded down to it
        most = min(cap, 0xFFFF << self._rcv_wscale) // unit * unit  # the widest window it can offer
        left = self._rcv_adv - self._rcv_nxt  # what the peer may still send
        # At least one unit: an update's rounding then never leaves the next read due at once.
        step = max(min(cap // 2, self._our_mss), unit)
        if left >= most // 2 or most - left < step:
            # It need not (the peer has half the window), or no read can widen the offer by a step:
            # waking then would cost a pump per read, and a flow that finds itself at the level
            # after its own pump would wake itself for ever.
            return -1
        return cap - left - step

    def use_buffers(self, recv: RecvBuffer, send: SendBuffer) -> None:
        """Adopt the driver's buffers (the ones its app reads and writes), moving anything already
        held into them (a passive open may have data before its driver exists). ``send``'s capacity
        becomes this connection's send buffer size."""
        old_r, old_s = self._rbuf, self._sbuf
        if old_r:
            recv.push(old_r.take(len(old_r)))
        send.capacity = old_s.capacity
        send.start = old_s.start
        if len(old_s):
            send.write(old_s.peek())
        self._rbuf, self._sbuf = recv, send

    @property
    def recv_buffer(self) -> RecvBuffer:
        """The buffer the app reads (a driver's own, after ``use_buffers``)."""
        return self._rbuf

    @property
    def send_buffer(self) -> SendBuffer:
        """The buffer the app writes and retransmissions are cut from."""
        return self._sbuf

    @property
    def coalesce_hint(self) -> tuple[int, int]:
        """(the sequence number expected next, the most payload bytes one coalesced segment should
        carry) for a receiver that merges a burst's in-order segments before ``on_segment``
        (``netstack/gro.py``): runs no longer than the ACK-within-a-burst step keep the ACK pace."""
        return self._rcv_seq(self._rcv_nxt), self.config.ack_every * self._payload_max

    @property
    def memory_bytes(self) -> int:
        """Payload bytes currently held (send, receive and out-of-order queues)."""
        return len(self._sbuf) + len(self._rbuf) + self._reasm.buffered

    def time_wait_state(self) -> tuple[int, int]:
        """(SND.NXT, RCV.NXT) sequence numbers, for handing a TIME_WAIT flow to a ``TimeWaitTable``."""
        return self._snd_seq(self._snd_max), self._rcv_seq(self._rcv_nxt)

    # ------------------------------------------------------------------ app calls

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue bytes for sending; returns how many fit in the send buffer."""
        if self._error is not None:
            raise self._error
        if self._fin_off is not None or self._state not in (_S.SYN_SENT, _S.SYN_RECEIVED, _S.ESTABLISHED,
                                                            _S.CLOSE_WAIT):
            raise TcpStateError(f"cannot send in {self._state.value} after shutdown")
        n = self._sbuf.write(data)
        if n:
            self._dirty = True
        return n

    def recv(self, max_bytes: int) -> bytes:
        """Read up to ``max_bytes``; b"" means EOF (or nothing yet: check ``readable``)."""
        rbuf = self._rbuf
        if max_bytes <= 0:
            return b""
        if not rbuf:
            if self._error is not None and not self._fin_received:
                raise self._error
            return b""
        data = rbuf.take(max_bytes)
        self.on_read()
        return data

    def on_read(self) -> None:
        """The app read from the receive buffer: ACK at once if that moves the window's right edge
        by at least min(buffer/2, MSS) (RFC 9293 §3.8.6.2.2, receiver SWS avoidance) while the peer
        has less than half the buffer left to send into (else the ACK of its next data carries the
        new window: Linux's rule in ``tcp_cleanup_rbuf``). ``read_wake_level`` is the same test."""
        if len(self._rbuf) <= self.read_wake_level:
            self._ack_now = True
            self._dirty = True

    def shutdown_write(self) -> None:
        """Half-close: a FIN follows the data already queued."""
        if self._fin_off is not None:
            return
        st = self._state
        if st in (_S.CLOSED, _S.LISTEN):
            return
        self._fin_off = self._sbuf.end
        # In SYN-SENT/SYN-RECEIVED the FIN waits for ESTABLISHED (RFC 9293 §3.10.4); see _established.
        if st is _S.ESTABLISHED:
            self._state = _S.FIN_WAIT_1
        elif st is _S.CLOSE_WAIT:
            self._state = _S.LAST_ACK
        self._dirty = True

    def close(self) -> None:
        """Full close. Unread received data turns it into an abort (RFC 2525 §2.17), like Linux."""
        st = self._state
        if st in (_S.CLOSED, _S.LISTEN):
            return
        if st is _S.SYN_SENT:
            self._to_closed(None)
            return
        if self._rbuf:
            self.abort()
            return
        self._app_closed = True
        self.shutdown_write()
        if self._state is _S.FIN_WAIT_2 and self._close_at is None:
            self._close_at = self._last_now + self.config.fin_wait_2_timeout

    def abort(self) -> None:
        """Reset the connection: queue an RST (unless no SYN was answered yet) and close."""
        st = self._state
        if st in (_S.CLOSED, _S.TIME_WAIT):
            self._to_closed(self._error)
            return
        if st is not _S.SYN_SENT:
            self._queue_ctl(self._segment(self._snd_max if self._snd_max >= 0 else 0, RST | ACK, b""))
        self._to_closed(ConnectionAborted("connection aborted locally"))
        self._dirty = True

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _wscale_for(buf: int) -> int:
        shift = 0
        while (buf >> shift) > 0xFFFF and shift < MAX_WSCALE:
            shift += 1
        return shift

    def _snd_seq(self, off: int) -> int:
        return (self._snd_base + off) & SEQ_MASK

    def _rcv_seq(self, off: int) -> int:
        return (self._rcv_base + off) & SEQ_MASK

    def _tsval(self, now: float) -> int:
        return (int(now * 1000) + self._ts_offset) & SEQ_MASK

    def _on_peer_syn(self, syn: TcpSegment) -> None:
        """Record IRS and negotiate options from the peer's SYN (or SYN-ACK)."""
        cfg = self.config
        self._rcv_base = (syn.seq + 1) & SEQ_MASK
        self._rcv_nxt = 0
        self._last_ack_sent = 0
        self._ts_ok = cfg.timestamps and syn.timestamp is not None
        if self._ts_ok and syn.timestamp is not None:
            self._ts_recent = syn.timestamp[0]
        self._sack_ok = cfg.sack and syn.sack_permitted
        self._ws_ok = cfg.window_scaling and syn.wscale is not None
        if self._ws_ok and syn.wscale is not None:
            self._snd_wscale = syn.wscale
            self._rcv_wscale = self._wscale_for(cfg.recv_buffer)
        else:
            self._snd_wscale = self._rcv_wscale = 0
        peer_mss = syn.mss if syn.mss else (DEFAULT_MSS_V4 if self.local[0].version == 4 else DEFAULT_MSS_V6)
        self._snd_mss = max(min(peer_mss, self._our_mss), 64)
        self._payload_max = self._snd_mss - (12 if self._ts_ok else 0)
        self._cc = CONGESTION_CONTROLS[cfg.congestion_control](self._payload_max)
        self._cc.recover = -1
        self._rcv_adv = min(cfg.recv_buffer, 0xFFFF)

    def _advertise(self) -> int:
        """The window field for an outgoing non-SYN segment; moves RCV.ADV (never leftwards)."""
        rcv_nxt = self._rcv_nxt
        new_edge = rcv_nxt + self.config.recv_buffer - len(self._rbuf)
        edge = self._rcv_adv
        if edge < rcv_nxt or new_edge - edge >= min(self.config.recv_buffer // 2, self._our_mss):
            edge = new_edge
        wnd = edge - rcv_nxt
        if wnd < 0:
            wnd = 0
        scaled = wnd >> self._rcv_wscale
        if scaled > 0xFFFF:
            scaled = 0xFFFF
        adv = rcv_nxt + (scaled << self._rcv_wscale)
        if adv > self._rcv_adv:
            self._rcv_adv = adv
        return scaled

    def _dataless_off(self) -> int:
        """Where a segment without data sits: SND.MAX, unless that is past the peer's window edge
        (it shrank its window): then the edge, where the peer still takes the segment's ACK field
        (RFC 9293 §3.10.7.4 drops an out-of-window segment unread; Linux ``tcp_acceptable_seq``)."""
        una = self._snd_una
        edge = una + self._snd_wnd
        return self._snd_max if self._snd_max <= edge or una < 0 else edge  # una < 0: our SYN unacknowledged

    def _segment(self, off: int, flags: int, payload: bytes, now: float | None = None) -> TcpSegment:
        """Build a segment at send offset ``off``; every ACK-carrying segment satisfies a pending ACK."""
        ts = None
        if self._ts_ok:
            ts = (self._tsval(self._last_now if now is None else now), self._ts_recent)
        blocks: tuple[tuple[int, int], ...] = ()
        if flags & ACK:
            ack = (self._rcv_base + self._rcv_nxt) & SEQ_MASK
            window = self._advertise()
            self._last_ack_sent = self._rcv_nxt
            self._ack_now = False
            self._delack_at = None
            self._unacked_segs = 0
            if self._sack_ok and self._reasm:
                room = (40 - (12 if ts else 0) - 4) // 8
                if payload:
                    room = min(room, (self._snd_mss - len(payload) - (12 if ts else 0) - 4) // 8)
                if room > 0:
                    base = self._rcv_base
                    blocks = tuple(((base + s) & SEQ_MASK, (base + e) & SEQ_MASK)
                                   for s, e in self._reasm.sack_blocks(room))
        else:
            ack = 0
            window = self._advertise()
        return TcpSegment(self._lport, self._rport, (self._snd_base + off) & SEQ_MASK, ack, flags, window,
                          None, None, False, blocks, ts, payload)

    def _syn_segment(self, now: float) -> TcpSegment:
        cfg = self.config
        synack = self._passive or self._state is _S.SYN_RECEIVED
        if synack:
            ws = self._rcv_wscale if self._ws_ok else None
            ts = (self._tsval(now), self._ts_recent) if self._ts_ok else None
            sack = self._sack_ok
            flags = SYN | ACK
            ack = self._rcv_seq(self._rcv_nxt)
            self._last_ack_sent = self._rcv_nxt
            self._ack_now = False
        else:
            ws = self._rcv_wscale if cfg.window_scaling else None
            ts = (self._tsval(now), 0) if cfg.timestamps else None
            sack = cfg.sack
            flags = SYN
            ack = 0
        window = min(cfg.recv_buffer, 0xFFFF)  # RFC 7323 §2.2: the SYN's window is never scaled
        return TcpSegment(self._lport, self._rport, self._iss, ack, flags, window, self._our_mss, ws, sack,
                          (), ts, b"")

    def _to_closed(self, error: TcpConnectionError | None) -> None:
        self._state = _S.CLOSED
        if error is not None and self._error is None:
            self._error = error
        self._rto_at = self._persist_at = self._delack_at = self._keepalive_at = self._close_at = None
        self._rack_at = self._tlp_at = None
        self._syn_pending = False
        self._ack_now = False
        self._sbuf.release()
        self._reasm = Reassembler(0)
        if isinstance(error, ConnectionAborted):
            # Our own abort: nobody will read them. A peer's RST keeps what arrived in order before
            # it readable, then the error (as Linux's receive queue, and as the app saw it when
            # those bytes had already moved to a second buffer).
            self._rbuf.discard()

    def _to_time_wait(self, now: float) -> None:
        self._state = _S.TIME_WAIT
        self._rto_at = self._persist_at = self._keepalive_at = self._rack_at = self._tlp_at = None
        self._close_at = now + self.config.time_wait
        self._sbuf.release()

    def _queue_ctl(self, seg: TcpSegment) -> None:
        """Queue a control segment (RST, per-segment duplicate ACK); bounded if nobody polls."""
        if len(self._ctl) < MAX_QUEUED_CONTROL:
            self._ctl.append(seg)

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 §3.2/§4.2/§5.2 challenge ACK, rate-limited per second (§7)."""
        sec = int(now)
        if sec != self._chal_second:
            self._chal_second = sec
            self._chal_count = 0
        if self._chal_count < self.config.challenge_ack_limit:
            self._chal_count += 1
            self.challenge_acks += 1
            self._ack_now = True
            self._dirty = True

    def _established(self, now: float) -> None:
        self._state = _S.ESTABLISHED
        self._rto_at = None
        if self._retries:  # the handshake timed out at least once (RFC 6298 §5.7)
            self._rtt.after_handshake_timeout()
        self._retries = 0
        if self.config.keepalive_idle is not None:
            self._keepalive_at = now + self.config.keepalive_idle
        if self._fin_off is not None:
            self._state = _S.FIN_WAIT_1

    # ------------------------------------------------------------------ input

    def on_segment(self, seg: TcpSegment, now: float) -> None:
        """Process one segment addressed to this connection (ports already demultiplexed)."""
        self._last_now = now
        st = self._state
        if st is _S.CLOSED:
            return
        self._dirty = True
        if st is _S.SYN_SENT:
            self._on_segment_syn_sent(seg, now)
            return
        flags = seg.flags
        if st is _S.SYN_RECEIVED and flags & SYN and not flags & (ACK | RST) and \
                seg.seq == ((self._rcv_base - 1) & SEQ_MASK):
            self._syn_pending = True  # the peer retransmitted its SYN: our SYN-ACK was lost
            return
        if self._keepalive_at is not None:
            self._keepalive_at = now + (self.config.keepalive_idle or 0.0)
            self._ka_probes = 0
        rcv_nxt = self._rcv_nxt
        seg_start = rcv_nxt + seq_diff(seg.seq, (self._rcv_base + rcv_nxt) & SEQ_MASK)
        payload = seg.payload
        plen = len(payload)
        # PAWS, RFC 7323 §5.3.
        ts = seg.timestamp
        if self._ts_ok and ts is not None and not flags & RST and seq_lt(ts[0], self._ts_recent):
            self._ack_now = True
            return
        # Acceptability, RFC 9293 §3.10.7.4.
        wnd = self._rcv_adv - rcv_nxt
        if wnd < 0:
            wnd = 0
        seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        if seg_len == 0:
            ok = rcv_nxt <= seg_start <= rcv_nxt + wnd
        elif wnd == 0:
            ok = False
        else:
            ok = seg_start < rcv_nxt + wnd and seg_start + seg_len > rcv_nxt
        if not ok:
            if flags & RST:
                return
            self._ack_now = True
            if st is _S.TIME_WAIT and flags & FIN:
                self._close_at = now + self.config.time_wait  # retransmitted FIN restarts 2*MSL
            if not (wnd == 0 and seg_start == rcv_nxt and flags & ACK):
                return
            # Zero window: still process the ACK field (RFC 9293 §3.10.7.4), drop the data.
            payload = b""
            plen = 0
            flags &= ~(FIN | SYN)
        # RST, RFC 5961 §3.2.
        if flags & RST:
            if seg_start == rcv_nxt:
                if st in (_S.CLOSING, _S.LAST_ACK, _S.TIME_WAIT):
                    self._to_closed(None)
                elif st is _S.SYN_RECEIVED and not self._passive:
                    # RFC 9293 §3.10.7.4: came from SYN-SENT (simultaneous open), so it was refused.
                    self._to_closed(ConnectionRefused("connection refused"))
                else:
                    self._to_closed(ConnectionReset("connection reset by peer"))
            else:
                self._challenge_ack(now)
            return
        # SYN in a synchronized state, RFC 5961 §4.2.
        if flags & SYN:
            self._challenge_ack(now)
            return
        if not flags & ACK:
            return
        ack_off = self._snd_una + seq_diff(seg.ack, (self._snd_base + self._snd_una) & SEQ_MASK)
        if st is _S.SYN_RECEIVED:
            if self._snd_una < ack_off <= self._snd_max:
                self._snd_una = 0
                if self._snd_nxt < 0:
                    self._snd_nxt = 0
                self._snd_wnd = seg.window << self._snd_wscale
                self._max_snd_wnd = max(self._max_snd_wnd, self._snd_wnd)
                self._snd_wl1 = seg_start
                self._snd_wl2 = ack_off
                if self._rto_at is not None and self._rtt_probe is not None:
                    self._rtt.sample(now - self._rtt_probe[1])
                self._rtt_probe = None
                self._established(now)
                st = self._state
            else:
                self._queue_ctl(TcpSegment(self._lport, self._rport, seg.ack, 0, RST, 0))
                return
        if ack_off > self._snd_max:
            self._ack_now = True  # ACK for data never sent
            return
        if ack_off < self._snd_una - max(self._max_snd_wnd, 1):
            self._challenge_ack(now)  # RFC 5961 §5.2
            return
        # Timestamps: remember the peer's clock (RFC 7323 §4.3).
        if ts is not None and self._ts_ok and seg_start <= self._last_ack_sent:
            self._ts_recent = ts[0]
        self._on_ack(seg, ack_off, seg_start, plen, now)
        st = self._state
        if st is _S.CLOSED:
            return
        if plen:
            if st in _CAN_RECV_DATA:
                if self._app_closed:
                    self.abort()  # data for an app that will never read it
                    return
                self._on_data(seg_start, payload, now)
            else:
                self._ack_now = True
        if flags & FIN and st not in (_S.CLOSED, _S.TIME_WAIT):
            fin_off = seg_start + plen
            if fin_off >= self._rcv_nxt:
                self._rcv_fin_off = fin_off
            self._ack_now = True
        if self._rcv_fin_off is not None and self._rcv_fin_off == self._rcv_nxt and not self._fin_received:
            self._on_fin(now)

    def _on_segment_syn_sent(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 §3.10.7.3."""
        flags = seg.flags
        if flags & ACK and seg.ack != self._snd_base:
            if not flags & RST:
                self._queue_ctl(TcpSegment(self._lport, self._rport, seg.ack, 0, RST, 0))
            return
        if flags & RST:
            if flags & ACK:
                self._to_closed(ConnectionRefused("connection refused"))
            return
        if not flags & SYN:
            return
        self._on_peer_syn(seg)
        if flags & ACK:
            self._snd_una = self._snd_nxt = self._snd_max = 0
            self._snd_wnd = seg.window  # unscaled in a SYN
            self._max_snd_wnd = self._snd_wnd
            self._snd_wl1 = -1
            self._snd_wl2 = 0
            if self._ts_ok and seg.timestamp is not None and seg.timestamp[1]:
                if self._last_rexmit_tsval is None or not seq_lt(seg.timestamp[1], self._last_rexmit_tsval):
                    self._rtt.sample(((self._tsval(now) - seg.timestamp[1]) & SEQ_MASK) / 1000)
            elif self._retries == 0 and self._rtt_probe is not None:
                self._rtt.sample(now - self._rtt_probe[1])
            self._rtt_probe = None
            self._established(now)
            self._ack_now = True
        else:
            self._state = _S.SYN_RECEIVED  # simultaneous open
            self._syn_pending = True
            self._rto_at = None

    def _on_ack(self, seg: TcpSegment, ack_off: int, seg_start: int, plen: int, now: float) -> None:
        una = self._snd_una
        cc = self._cc
        sackd_new = False
        rack = self._rack
        if self._sack_ok and seg.sack_blocks:
            base = self._snd_base
            sb = self._scoreboard
            for i, (left, right) in enumerate(seg.sack_blocks):
                s = una + seq_diff(left, (base + una) & SEQ_MASK)
                e = una + seq_diff(right, (base + una) & SEQ_MASK)
                if una < s < e <= self._snd_max and sb.add(s, e):
                    sackd_new = True
                    if rack is not None:
                        rack.on_delivered(s, e, now)
                elif i == 0 and s < e <= max(ack_off, una):
                    # RFC 2883 D-SACK: a duplicate arrived, so a retransmission was spurious.
                    if rack is not None:
                        rack.on_dsack(now, self._rtt.srtt or self._rtt.rto)
                    self._on_dsack(s, e, max(ack_off, una))
        wnd = seg.window << self._snd_wscale
        if ack_off > una:
            acked = ack_off - una
            flight_before = self._snd_max - una
            self._sbuf.ack_to(min(ack_off, self._sbuf.end))
            if rack is not None:
                rack.on_delivered(una, ack_off, now)
                rack.forget_below(ack_off)
                if self._tlp_end is not None and ack_off >= self._tlp_end:
                    self._tlp_end = None  # the probe's episode is over (RFC 8985 §7.4)
                self._tlp_at = None
            self._snd_una = ack_off
            if self._snd_nxt < ack_off:
                self._snd_nxt = ack_off
            self._scoreboard.advance(ack_off)
            if self._rexmit_next < ack_off:
                self._rexmit_next = ack_off
            # RTT sample: timestamps (RFC 7323 §4) or one timed segment (Karn).
            ts = seg.timestamp
            rtt_sample: float | None = None
            if self._ts_ok and ts is not None and ts[1]:
                # An ACK that covers retransmitted data and echoes a TSval older than our latest
                # retransmission may answer that retransmission (the receiver echoes TS.Recent of
                # older data): Karn's ambiguity again, so no sample. Without this rule, a lost ACK
                # followed by an RTO yields an RTT sample the size of the RTO, which inflates the
                # next RTO, and so on. ACKs below every retransmitted byte are not ambiguous: the
                # rule once covered them too, and a flow whose RTT outgrew its PTO then lost every
                # sample to its own tail loss probes (bench/flows.py), for ever.
                lo = self._rexmit_lo
                if (self._last_rexmit_tsval is None or lo is None or ack_off <= lo
                        or not seq_lt(ts[1], self._last_rexmit_tsval)):
                    rtt_sample = ((self._tsval(now) - ts[1]) & SEQ_MASK) / 1000
            elif self._rtt_probe is not None and ack_off > self._rtt_probe[0]:
                rtt_sample = now - self._rtt_probe[1]
                self._rtt_probe = None
            if rtt_sample is not None:
                self._rtt.sample(rtt_sample)
            if self._rexmit_lo is not None and ack_off >= self._rexmit_hi:
                self._rexmit_lo = None  # every retransmitted byte is acknowledged
            self._retries = 0
            # The backed-off RTO stays until a valid RTT sample clears it (Karn's algorithm; the
            # sample does, in RttEstimator.sample). Clearing it on any new ACK (as BSD does) let a
            # flow whose path RTT grew past its RTO (a queue of seconds below it, bench/flows.py)
            # time out again at once, for ever: each ACK echoes pre-retransmission data, so it gives
            # no sample, and the RTO never learns the RTT.
            if self._rto_undo is not None:
                self._check_spurious_rto(ts, ack_off)
            if self._undo_tsval is not None and ts is not None and self._ts_ok:
                # Eifel detection (RFC 3522): the ACK echoes a TSval older than our retransmission, so
                # the original arrived and the recovery was caused by reordering: undo it (RFC 4015).
                if seq_lt(ts[1], self._undo_tsval) and self._undo is not None:
                    cc.cwnd = max(cc.cwnd, self._undo[0])
                    cc.ssthresh = max(cc.ssthresh, self._undo[1])
                    cc.in_recovery = False
                    # The undone recovery must not block the next one (RFC 6582's guard is for
                    # losses of one window, and this window had none): else a real loss right
                    # after an undo waits for the RTO.
                    cc.recover = ack_off
                    self._rexmit_next = self._rexmit_end = ack_off
                    self._dupthresh = min(self._dupthresh * 2, MAX_DUPTHRESH)
                    self.spurious_recoveries += 1
                    cc.on_undo()
                    self._dsack_undo = None
                    if rack is not None:
                        rack.on_dsack(now, self._rtt.srtt or self._rtt.rto)
                self._undo = self._undo_tsval = None
            if cc.in_recovery:
                if ack_off >= cc.recover:
                    cc.on_full_ack(self._snd_max - ack_off)
                    if rack is not None:
                        rack.to_resend.clear()
                        rack.on_recovery_end()
                elif not self._sack_ok:
                    cc.on_partial_ack(acked)
                    # RFC 6582 step 5: retransmit the first unacknowledged segment.
                    self._rexmit_next = ack_off
                    self._rexmit_end = max(self._rexmit_end, ack_off + self._payload_max)
                # With SACK, RFC 6675 keeps cwnd at ssthresh (pipe does the accounting) and never
                # rewinds HighRxt: holes already retransmitted are not sent again on a partial ACK.
            else:
                slow_start = cc.cwnd < cc.ssthresh
                hs = self._hystart
                if slow_start and cc.ssthresh >= INITIAL_SSTHRESH and self.config.hystart:
                    # The first slow start only (RFC 9406 §4.3): later ones stop at ssthresh anyway.
                    if hs is None:
                        hs = self._hystart = HyStart()
                    hs.on_ack(ack_off, self._snd_nxt)
                    if rtt_sample is not None:
                        hs.on_rtt(rtt_sample)
                    if hs.done:
                        cc.ssthresh = cc.cwnd  # §4.2: on to congestion avoidance
                        slow_start = False
                else:
                    hs = None
                # Grow only while cwnd limits the sender (RFC 7661): a flow held back by its send
                # buffer or by the app otherwise inflates cwnd without bound, and the pacing rate and
                # the bursts after an undo with it. In slow start too (Linux grows it while the flight
                # fills half of it): with 1,000 flows on a busy pool the pacer's late ticks kept
                # flights below the window, and the flows never cut stayed in slow start, doubling
                # towards the send buffer, while the flows cut once held theirs (issue 14: fairness;
                # tests/netstack/tcp/test_pacing_pairs.py). Paced at 2*cwnd/SRTT, a flow that is not
                # held back fills its window within half a round trip, so slow start still doubles.
                if flight_before + self._payload_max >= cc.cwnd:
                    cc.on_ack(hs.growth(acked) if hs is not None and slow_start else acked, flight_before,
                              now, self._rtt.srtt)
            self._dupacks = 0
            self._rto_at = None if self._snd_una >= self._snd_max else now + self._rtt.rto
            self._dirty = True
        elif (ack_off == una and plen == 0 and not seg.flags & (SYN | FIN) and self._snd_max > una
              and (sackd_new if self._sack_ok else wnd == self._snd_wnd)):
            # With SACK, RFC 6675 §2's DupAck: only an ACK bringing new SACK information counts. A
            # bare duplicate answers a duplicate segment (a spurious retransmission arriving
            # again), and counting those turned one spurious timeout into a recovery every round
            # trip (tests/netstack/tcp/test_rtt_swing.py).
            self._dupacks += 1
            if cc.in_recovery:
                if not self._sack_ok:
                    cc.on_dupack_in_recovery()
                self._dirty = True
        # Window update, RFC 9293 §3.10.7.4 (SND.WL1/SND.WL2 guard against old segments), and, as
        # Linux's tcp_may_update_window, from any ACK that moved SND.UNA: SND.WND counts from SND.UNA,
        # so keeping an older window while SND.UNA moves would move the edge right by the bytes just
        # acknowledged. A peer's retransmission (sequence numbers below its pure ACKs', which carry
        # SND.MAX) acknowledging more did that, and we sent past its edge (tests/netstack/tcp/test_window.py).
        if ack_off >= una and (ack_off > una or self._snd_wl1 < seg_start
                               or (self._snd_wl1 == seg_start and self._snd_wl2 <= ack_off)):
            if wnd != self._snd_wnd:
                self._dirty = True
            self._snd_wnd = wnd
            if wnd > self._max_snd_wnd:
                self._max_snd_wnd = wnd
            self._snd_wl1 = seg_start
            self._snd_wl2 = ack_off
            if wnd:
                self._persist_at = None
                self._persist_backoff = 0
        # Enter fast recovery (RFC 6582 §3.2 step 2; with SACK, RFC 6675's DupThresh*SMSS rule too).
        if (not cc.in_recovery and self._snd_una >= cc.recover and self._snd_max > self._snd_una
                and (self._dupacks >= self._dupthresh
                     or (sackd_new
                         and self._scoreboard.sacked_bytes >= self._dupthresh * self._payload_max))):
            self._enter_recovery()
        if rack is not None and self._snd_max > self._snd_una:
            self._rack_detect(now)
        if cc.in_recovery and self._sack_ok:
            # RFC 6675 IsLost: only holes with more than (DupThresh-1)*SMSS SACKed above are lost; a
            # hole below a packet that merely overtook (reordering) is still in flight.
            edge = self._scoreboard.lost_edge((self._dupthresh - 1) * self._payload_max + 1)
            if edge is not None and edge > self._rexmit_end:
                self._rexmit_end = edge
        # Our FIN acknowledged?
        fin_off = self._fin_off
        if fin_off is not None and self._snd_una > fin_off:
            st = self._state
            if st is _S.FIN_WAIT_1:
                self._state = _S.FIN_WAIT_2
                if self._app_closed:
                    self._close_at = now + self.config.fin_wait_2_timeout
            elif st is _S.CLOSING:
                self._to_time_wait(now)
            elif st is _S.LAST_ACK:
                self._to_closed(None)

    def _note_rexmit(self, start: int, now: float) -> None:
        """A retransmission from offset ``start`` goes out now: ACKs covering it may be ambiguous."""
        self._last_rexmit_tsval = self._tsval(now)
        if self._rexmit_lo is None or start < self._rexmit_lo:
            self._rexmit_lo = start
        self._rexmit_hi = max(self._snd_max, start + 1)

    def on_local_congestion(self) -> None:
        """The queue below this flow is long: reduce cwnd as for ECN-CE (RFC 3168 §6.1.2), as Linux's
        tcp_enter_cwr does when its qdisc answers NET_XMIT_CN, at most once per window and never
        during recovery. No retransmission: nothing was lost."""
        cc = self._cc
        if cc.in_recovery or self._snd_una < cc.recover or self._snd_max <= self._snd_una:
            return
        cc.on_congestion_signal(self._snd_max - self._snd_una, self._snd_max)
        self.local_congestion_signals += 1

    def _check_spurious_rto(self, ts: tuple[int, int] | None, ack_off: int) -> None:
        """RFC 4015 on the first ACK of new data after an RTO: if it echoes a TSval older than the
        RTO's retransmission, the original arrived and the timeout was spurious (the RTT outgrew the
        RTO: a queue below us). Restore cwnd/ssthresh and resume with new data (SND.NXT <- SND.MAX)
        instead of resending, go-back-N, a window the receiver already has."""
        undo, tsval = self._rto_undo, self._rto_undo_tsval
        self._rto_undo = self._rto_undo_tsval = None
        if undo is None or tsval is None or ts is None or not self._ts_ok or not seq_lt(ts[1], tsval):
            return
        cc = self._cc
        cc.cwnd = max(cc.cwnd, undo[0])
        cc.ssthresh = max(cc.ssthresh, undo[1])
        cc.in_recovery = False
        cc.recover = ack_off
        cc.on_undo()
        self._snd_nxt = max(self._snd_nxt, self._snd_max)
        self._rexmit_next = self._rexmit_end = ack_off
        self.spurious_rtos += 1

    def _on_dsack(self, start: int, end: int, una: int) -> None:
        """RFC 3708 / Linux's DSACK undo: once every retransmission of the last recovery has come
        back as a duplicate, no segment of it was lost (reordering made it), so its window
        reduction is undone. Eifel only sees the first retransmission's fate, and only while the
        recovery lasts; D-SACKs usually arrive a round trip later, after it ended."""
        undo = self._dsack_undo
        if undo is None or start < undo[2] or end > undo[3]:
            return
        mss = self._payload_max
        self._dsacked += (end - start + mss - 1) // mss
        if not 0 < self.retransmitted_segments - self._dsack_rexmits <= self._dsacked:
            return
        cc = self._cc
        cc.cwnd = max(cc.cwnd, undo[0])
        cc.ssthresh = max(cc.ssthresh, undo[1])
        if cc.in_recovery:
            cc.in_recovery = False
            cc.recover = una
            self._rexmit_next = self._rexmit_end = una
        self._dupthresh = min(self._dupthresh * 2, MAX_DUPTHRESH)
        self.spurious_recoveries += 1
        cc.on_undo()
        self._dsack_undo = None
        self._undo = self._undo_tsval = None

    def _enter_recovery(self) -> None:
        cc = self._cc
        self._undo = (cc.cwnd, cc.ssthresh)
        self._undo_tsval = None
        # (cwnd, ssthresh, SND.UNA, SND.MAX) for the D-SACK undo, and retransmissions so far.
        self._dsack_undo = (cc.cwnd, cc.ssthresh, self._snd_una, self._snd_max)
        self._dsack_rexmits = self.retransmitted_segments
        self._dsacked = 0
        cc.enter_recovery(self._snd_max - self._snd_una, self._snd_max)
        self.fast_recoveries += 1
        if self._sack_ok:
            cc.cwnd = cc.ssthresh  # RFC 6675 uses pipe, not inflation
        self._rexmit_next = self._snd_una
        self._rexmit_end = self._snd_una + self._payload_max
        self._rtt_probe = None
        self._dirty = True

    def _rack_detect(self, now: float) -> None:
        """RFC 8985 §6.2: mark lost by time, start recovery on it, arm the reordering timer."""
        rack = self._rack
        assert rack is not None
        cc = self._cc
        una = self._snd_una
        sb = self._scoreboard
        reo = rack.reo_wnd(cc.in_recovery, sb.sacked_bytes >= self._dupthresh * self._payload_max,
                           self._rtt.srtt or self._rtt.rto)
        edge, lost, timeout = rack.detect_loss(una, self._snd_max, sb, now, reo)
        self._rack_at = None if timeout is None else now + timeout
        if not lost and (edge <= una or sb.next_unsacked(una)[0] >= edge):
            return
        if not cc.in_recovery and una >= cc.recover:
            self._enter_recovery()
        if cc.in_recovery and edge > self._rexmit_end:
            self._rexmit_end = edge
        if lost:
            rack.to_resend.extend(lost)
        self._dirty = True

    def _on_data(self, seg_start: int, payload: bytes, now: float) -> None:
        rcv_nxt = self._rcv_nxt
        if seg_start < rcv_nxt:
            payload = payload[rcv_nxt - seg_start:]
            seg_start = rcv_nxt
        limit = rcv_nxt + self.config.recv_buffer - len(self._rbuf)
        if self._rcv_adv < limit:
            limit = self._rcv_adv
        if seg_start + len(payload) > limit:
            payload = payload[:max(limit - seg_start, 0)]
            self._ack_now = True
        if not payload:
            return
        if seg_start == rcv_nxt:
            rbuf = self._rbuf
            rbuf.push(payload)  # straight into the buffer the app reads
            rcv_nxt += len(payload)
            if self._reasm:
                chunks, rcv_nxt = self._reasm.pop_ready(rcv_nxt)
                for chunk in chunks:
                    rbuf.push(chunk)
                self._ack_now = True  # a hole was (partly) filled: ACK at once (RFC 5681 §4.2)
            self._rcv_nxt = rcv_nxt
            # Full-sized segments' worth (RFC 9293 §3.8.6.3 counts bytes): a coalesced run counts
            # as the segments it was made of.
            self._unacked_segs += 1 + (len(payload) - 1) // self._payload_max
            if rcv_nxt - self._last_ack_sent >= self.config.ack_every * self._payload_max:
                # ACK within the batch the stack hands us, not only at its end: a burst of 40
                # segments then opens the sender's window several times, not once (issue 14).
                self._queue_ctl(self._segment(self._dataless_off(), ACK, b"", now))
            elif self._unacked_segs >= 2 or self.config.delayed_ack <= 0:
                self._ack_now = True
            elif self._delack_at is None:
                self._delack_at = now + self.config.delayed_ack
        else:
            self._reasm.insert(seg_start, payload)
            # Out of order: one immediate duplicate ACK per segment, with SACK blocks (RFC 5681 §4.2),
            # even when the stack hands us a batch before polling.
            self._queue_ctl(self._segment(self._dataless_off(), ACK, b"", now))

    def _on_fin(self, now: float) -> None:
        self._fin_received = True
        self._rcv_nxt += 1
        self._ack_now = True
        st = self._state
        if st in (_S.ESTABLISHED, _S.SYN_RECEIVED):
            self._state = _S.CLOSE_WAIT
        elif st is _S.FIN_WAIT_1:
            self._state = _S.CLOSING
        elif st is _S.FIN_WAIT_2:
            self._to_time_wait(now)

    # ------------------------------------------------------------------ output

    def next_deadline(self) -> float | None:
        """When ``poll`` must next run; a time <= now means there is output ready."""
        if self._dirty or self._ctl or self._ack_now or self._syn_pending:
            return self._last_now
        best: float | None = None
        for t in (self._rto_at, self._persist_at, self._delack_at, self._keepalive_at, self._close_at,
                  self._rack_at, self._tlp_at, self._pace_wait):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def poll(self, now: float) -> list[TcpSegment]:
        """Run expired timers and return every segment to transmit now."""
        self._last_now = now
        self._dirty = False
        out: list[TcpSegment] = []
        if self._ctl:
            out.extend(self._ctl)
            self._ctl.clear()
        if self._close_at is not None and now >= self._close_at:
            self._to_closed(None)
        st = self._state
        if st is _S.CLOSED:
            return out
        tlp_due = self._tlp_at is not None and now >= self._tlp_at
        rto_held = self._rto_at
        if tlp_due and self._rto_at is not None and self._tlp_at is not None and self._tlp_at <= self._rto_at:
            self._rto_at = now + self._rtt.rto  # the probe goes first; the RTO is rearmed behind it
        if self._rto_at is not None and now >= self._rto_at:
            self._on_rto(now)
            st = self._state
            if st is _S.CLOSED:
                return out
        if self._delack_at is not None and now >= self._delack_at:
            self._ack_now = True
        if self._syn_pending:
            self._syn_pending = False
            out.append(self._syn_segment(now))
            if self._retries:
                self._note_rexmit(-1, now)
            if self._snd_max < 0:
                self._snd_nxt = self._snd_max = 0
                self._rtt_probe = (-1, now)
            if self._rto_at is None:
                self._rto_at = now + self._rtt.rto
            return out
        if self._rack_at is not None and now >= self._rack_at:
            self._rack_at = None
            if self._rack is not None and self._snd_max > self._snd_una:
                self._rack_detect(now)
        if st in _CAN_TRANSMIT:
            sent = len(out)
            self._transmit(now, out)
            if self._rack is not None:
                if tlp_due and self._tlp_at is not None:
                    self._tlp_at = None
                    probed = False
                    if not self._cc.in_recovery and self._snd_max > self._snd_una:
                        if len(out) == sent:
                            probed = self._tail_loss_probe(now, out)
                        else:  # new data went out anyway: it is the probe (RFC 8985 §7.3)
                            probed = True
                            self._tlp_end = self._snd_max
                    if not probed:
                        # Nothing was sent: the RTO must not have been pushed back, or a TLP armed
                        # and fired again and again would hold it off for ever.
                        self._rto_at = rto_held
                self._arm_tlp(now)
        if self._persist_at is not None and now >= self._persist_at:
            self._persist_backoff += 1
            self._persist_at = now + min(self._rtt.rto * (1 << min(self._persist_backoff, 16)),
                                         self.config.rto_max)
            out.append(self._segment(self._snd_una - 1, ACK, b"", now))  # zero-window probe
        if self._keepalive_at is not None and now >= self._keepalive_at:
            if self._ka_probes >= self.config.keepalive_probes:
                self._to_closed(ConnectionTimedOut("keepalive timed out"))
                return out
            self._ka_probes += 1
            self._keepalive_at = now + self.config.keepalive_interval
            out.append(self._segment(self._snd_una - 1, ACK, b"", now))
        if self._ack_now and st is not _S.SYN_SENT:
            out.append(self._segment(self._dataless_off(), ACK, b"", now))
        return out

    def _on_rto(self, now: float) -> None:
        self._rto_at = None
        self.rto_expiries += 1
        self._retries += 1
        st = self._state
        if st in (_S.SYN_SENT, _S.SYN_RECEIVED) and self._snd_una < 0:
            if self._retries > (self.config.synack_retries if self._passive else self.config.syn_retries):
                self._to_closed(ConnectionTimedOut("connection timed out (SYN retries exhausted)"))
                return
            self._rtt.back_off()
            self._syn_pending = True
            self._rtt_probe = None
            return
        if self._snd_una >= self._snd_max:
            return
        if self._retries > self.config.max_retransmits:
            self._to_closed(ConnectionTimedOut("connection timed out (retransmissions exhausted)"))
            return
        self._undo = self._undo_tsval = self._dsack_undo = None
        if self._rto_undo is None and self._ts_ok:
            self._rto_undo = (self._cc.cwnd, self._cc.ssthresh)
            self._rto_undo_tsval = self._tsval(now)  # the retransmission goes out in this poll
        if self._rack is not None:
            self._rack.reset(self._snd_una, now)
        self._rack_at = self._tlp_at = None
        self._tlp_end = None
        self._cc.on_timeout(self._snd_max - self._snd_una)
        self._cc.recover = self._snd_max
        self._scoreboard.clear()  # the receiver may have reneged (RFC 2018 §8)
        self._snd_nxt = self._snd_una
        self._rexmit_next = self._rexmit_end = self._snd_una
        self._dupacks = 0
        self._rtt_probe = None
        self._rtt.back_off()

    def _arm_tlp(self, now: float) -> None:
        """RFC 8985 §7.2: while data is in flight in the open state, probe after PTO unless the
        RTO comes first; one probe per episode."""
        if (self._tlp_at is None and self._tlp_end is None and self._rto_at is not None
                and not self._cc.in_recovery and self._snd_una >= self._cc.recover
                and self._snd_max > self._snd_una
                and self._state in (_S.ESTABLISHED, _S.CLOSE_WAIT)):
            flight = (self._snd_max - self._snd_una + self._payload_max - 1) // self._payload_max
            pto = probe_timeout(self._rtt.srtt, flight, self._rto_at - now)
            self._tlp_at = now + pto  # at most the RTO's time: then the probe goes first (§7.2)

    def _tail_loss_probe(self, now: float, out: list[TcpSegment]) -> bool:
        """§7.3: send one new segment if the windows allow, else retransmit the last one; then
        the RTO is rearmed, and RACK repairs whatever the probe's ACK reveals. False: nothing to send."""
        mss = self._payload_max
        data_end = self._sbuf.end
        una, nxt = self._snd_una, self._snd_nxt
        if nxt < data_end and nxt + min(mss, data_end - nxt) <= una + self._snd_wnd:
            length = min(mss, data_end - nxt)
            out.append(self._segment(nxt, ACK | PSH, self._sbuf.read(nxt, length), now))
            self._advance(nxt, length, now)
        else:
            end = min(self._snd_max, data_end)
            start = max(end - mss, una)
            if start >= end:
                return False
            out.append(self._segment(start, ACK, self._sbuf.read(start, end - start), now))
            self.retransmitted_segments += 1
            self._note_rexmit(start, now)
            if self._rack is not None:
                self._rack.on_retransmit(start, end, now)
        self.tail_loss_probes += 1
        self._tlp_end = self._snd_max
        self._rto_at = now + self._rtt.rto
        return True

    def _pipe(self) -> int:
        """Bytes believed in flight (RFC 6675 §4 'pipe', approximating every hole as lost)."""
        pipe = self._snd_nxt - self._snd_una
        sb = self._scoreboard
        if sb:
            pipe -= sb.sacked_below(self._snd_nxt)
            if self._cc.in_recovery:
                lo, hi = self._rexmit_next, self._rexmit_end  # lost holes not yet retransmitted
                if lo < hi:
                    pipe -= (hi - lo) - (sb.sacked_below(hi) - sb.sacked_below(lo))
        return pipe

    def _transmit(self, now: float, out: list[TcpSegment]) -> None:
        """Retransmit SACK holes in recovery, then send new (or go-back) data and our FIN."""
        mss = self._payload_max
        sbuf = self._sbuf
        data_end = sbuf.end
        cc = self._cc
        sb = self._scoreboard
        fin_off = self._fin_off
        # 0. Retransmissions RACK found lost again (RFC 8985 §6.2: dupACKs can never show these).
        if self._rack is not None and self._rack.to_resend:
            self._resend_rack_lost(self._rack, now, out)
        # 1. Fast-recovery retransmissions.
        if cc.in_recovery:
            if (self._sack_ok and self._snd_nxt >= data_end and fin_off is None
                    and (hi := sb.highest) is not None and hi > self._rexmit_end):
                self._rexmit_end = hi  # RFC 6675 NextSeg rule 3: no new data, so probe the holes left
            first = True
            while self._rexmit_next < self._rexmit_end:
                if not first and cc.cwnd - self._pipe() < mss:
                    break
                start, next_sacked = sb.next_unsacked(max(self._rexmit_next, self._snd_una))
                end = self._rexmit_end if next_sacked is None else min(next_sacked, self._rexmit_end)
                if start >= end or start >= self._snd_max:
                    self._rexmit_next = self._rexmit_end
                    break
                length = min(mss, end - start, data_end - start)
                if length <= 0:
                    if fin_off is not None and start == fin_off:
                        out.append(self._segment(start, FIN | ACK, b"", now))
                    self._rexmit_next = self._rexmit_end
                    break
                seg = self._segment(start, ACK, sbuf.read(start, length), now)
                out.append(seg)
                if self._undo is not None and self._undo_tsval is None and seg.timestamp is not None:
                    self._undo_tsval = seg.timestamp[0]
                self.retransmitted_segments += 1
                self._note_rexmit(start, now)
                if self._rack is not None:
                    self._rack.on_retransmit(start, start + length, now)
                self._rexmit_next = start + length
                first = False
            if self._rto_at is None:
                self._rto_at = now + self._rtt.rto
        # 2. New data (or data after an RTO rewound SND.NXT).
        self._pace_wait = None
        srtt = self._rtt.srtt or 0.0
        pace = self.config.pacing and srtt > 0
        if (self._snd_nxt == self._snd_una and self._snd_nxt < data_end and not cc.in_recovery
                and now - self._last_send > self._rtt.rto):
            cc.on_idle_restart()
        paced = 0  # new segments the pacer let go in this poll
        rate = slack = 0.0  # the pacing rate and burst slack, worked out at the first paced segment
        # This poll's first segment of new data; the later ones carry the same ACK, window and
        # timestamp (nothing is received while we transmit), so they skip ``_segment``'s work,
        # unless SACK blocks could differ by payload length (out-of-order data held).
        lead: TcpSegment | None = None
        while True:
            nxt = self._snd_nxt
            next_sacked = None
            if sb:
                nxt, next_sacked = sb.next_unsacked(nxt)
                self._snd_nxt = nxt
            avail = data_end - nxt
            if avail <= 0:
                if fin_off is not None and nxt == fin_off:
                    out.append(self._segment(nxt, FIN | ACK, b"", now))
                    self._advance(nxt, 1, now)
                break
            wnd_room = self._snd_una + self._snd_wnd - nxt
            if wnd_room <= 0:
                if self._snd_wnd == 0 and nxt <= self._snd_una and self._persist_at is None:
                    self._persist_at = now + self._rtt.rto  # persist timer (RFC 9293 §3.8.6.1)
                break
            room = cc.cwnd - (self._pipe() if sb else nxt - self._snd_una)  # _pipe without holes
            length = min(mss, avail, wnd_room, room)
            if next_sacked is not None and next_sacked - nxt < length:
                length = next_sacked - nxt
            if length <= 0:
                break
            if length < mss and length < avail and self._snd_nxt > self._snd_una:
                break  # sender SWS avoidance: wait for a full segment while data is in flight
            if pace and nxt >= self._snd_max:
                if not rate:  # cwnd, the peer's window and SRTT hold still while we transmit
                    gain = 2.0 if cc.cwnd < cc.ssthresh else 1.2
                    rate = gain * min(cc.cwnd, max(self._snd_wnd, mss)) / srtt
                    slack = max(2 * mss / rate, PACING_SLACK)
                at = self._pace_at
                if at is None or at < now - slack:
                    at = now - slack
                if at > now and not paced & 1:
                    self._pace_at = self._pace_wait = at
                    break
                # Segments leave in pairs (the second borrows from the next slot, so the rate is
                # unchanged): a receiver ACKs a second full segment at once but delays the ACK of a
                # lone one (RFC 9293 §3.8.6.3; Linux up to its ato, which grows to the RTT). A flow
                # paced to one segment per tick saw its SRTT inflated by that delay, so a lower
                # rate, so lone segments again: under 1,000 flows its rate fell to a tenth of a
                # flow that sent in bursts (issue 14: fairness).
                paced += 1
                self._pace_at = at + length / rate
            flags = ACK
            if nxt + length == data_end:
                flags |= PSH
                if fin_off is not None and fin_off == data_end:
                    flags |= FIN
            if lead is None or (self._sack_ok and self._reasm):
                lead = seg = self._segment(nxt, flags, sbuf.read(nxt, length), now)
            else:
                seg = TcpSegment(self._lport, self._rport, (self._snd_base + nxt) & SEQ_MASK, lead.ack, flags,
                                 lead.window, None, None, False, (), lead.timestamp, sbuf.read(nxt, length))
            out.append(seg)
            self._advance(nxt, length + (1 if flags & FIN else 0), now)

    def _resend_rack_lost(self, rack: Rack, now: float, out: list[TcpSegment]) -> None:
        mss = self._payload_max
        sb = self._scoreboard
        lost = rack.to_resend
        data_end = self._sbuf.end
        first = True
        while lost:
            if not first and self._cc.cwnd - self._pipe() < mss:
                break
            s = lost.pop(0)
            start, next_sacked = sb.next_unsacked(max(s, self._snd_una))
            if start != s or s >= self._snd_max:
                continue  # acknowledged or SACKed since
            end = min(s + mss, data_end, self._snd_max)
            if next_sacked is not None and next_sacked < end:
                end = next_sacked
            if end <= s:
                continue
            out.append(self._segment(s, ACK, self._sbuf.read(s, end - s), now))
            self.retransmitted_segments += 1
            self._note_rexmit(s, now)
            rack.on_retransmit(s, end, now)
            first = False
        if self._rto_at is None:
            self._rto_at = now + self._rtt.rto

    def _advance(self, nxt: int, n: int, now: float) -> None:
        end = nxt + n
        self._last_send = now
        rack = self._rack
        if rack is None and self._sack_ok and self.config.rack:
            rack = self._rack = Rack()
        if end > self._snd_max:
            if self._rtt_probe is None and nxt >= self._snd_max and not self._ts_ok:
                self._rtt_probe = (nxt, now)
            if rack is not None:
                if nxt < self._snd_max:
                    rack.on_retransmit(nxt, self._snd_max, now)
                rack.on_new_data(max(nxt, self._snd_max), now)
            self._snd_max = end
        else:
            if rack is not None:
                rack.on_retransmit(nxt, end, now)
            self.retransmitted_segments += 1
            self._note_rexmit(nxt, now)
            if self._rtt_probe is not None and nxt <= self._rtt_probe[0] < end:
                self._rtt_probe = None  # Karn: a retransmitted segment gives no sample
        self._snd_nxt = end
        if self._rto_at is None:
            self._rto_at = now + self._rtt.rto
