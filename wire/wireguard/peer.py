"""One WireGuard peer as a sans-IO state machine (device/peer.go, send.go, receive.go, timers.go).

Feed it datagrams (``receive``), plaintext IP packets (``send``) and the time (``tick``), always with
``now`` (a monotonic float, seconds). Collect datagrams to transmit (``datagrams_to_send``),
decrypted IP packets (``received_packets``) and events (``events``), then call ``tick`` again no
later than ``next_deadline()``. Malformed or unauthenticated datagrams are dropped and counted,
as WireGuard does; nothing from the network raises.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from pytsnet.wire.errors import CryptoError, ParseError
from pytsnet.wire.keys import NodePrivate, NodePublic
from pytsnet.wire.wireguard import handshake, messages, tai64n
from pytsnet.wire.wireguard.constants import (
    HANDSHAKE_INITIATION_RATE,
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    MESSAGE_COOKIE_REPLY_TYPE,
    MESSAGE_INITIATION_TYPE,
    MESSAGE_RESPONSE_TYPE,
    MESSAGE_TRANSPORT_SIZE,
    MESSAGE_TRANSPORT_TYPE,
    PADDING_MULTIPLE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
)
from pytsnet.wire.wireguard.cookie import CookieChecker, CookieGenerator
from pytsnet.wire.wireguard.keypair import NONCE, Keypair, Keypairs, padding_size
from pytsnet.wire.wireguard.messages import TRANSPORT_HEADER
from pytsnet.wire.wireguard.timers import Timer, Timers

QUEUE_STAGED_SIZE = 128  # packets held while waiting for a handshake (device/queueconstants_default.go)
_HEADER_UNPACK = TRANSPORT_HEADER.unpack_from
_HEADER_PACK = TRANSPORT_HEADER.pack
_NONCE_PACK = NONCE.pack
_PAD = bytes(PADDING_MULTIPLE)
# An initiator receiving under a keypair this old rekeys once, before it would go silent.
_LAST_MINUTE_REKEY_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
# Timer names as module globals: the per-packet path reads them without a class attribute lookup.
_PERSISTENT_KEEPALIVE = Timer.PERSISTENT_KEEPALIVE
_SEND_KEEPALIVE = Timer.SEND_KEEPALIVE
_NEW_HANDSHAKE = Timer.NEW_HANDSHAKE


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """A new keypair is usable for sending (initiator) or was confirmed by the initiator (responder)."""

    local_index: int
    is_initiator: bool


@dataclass(frozen=True, slots=True)
class HandshakeGaveUp:
    """No response after MAX_TIMER_HANDSHAKES + 2 initiations; staged packets were dropped."""


@dataclass(frozen=True, slots=True)
class KeyMaterialZeroed:
    """3 x REJECT_AFTER_TIME after the last session: every key of this peer is forgotten."""


Event = HandshakeCompleted | HandshakeGaveUp | KeyMaterialZeroed


class Peer:
    def __init__(
        self,
        local_private: NodePrivate,
        remote_public: NodePublic,
        *,
        persistent_keepalive: float = 0.0,
        mtu: int = 0,
        unix_time_offset: float = 0.0,
        random_bytes: Callable[[int], bytes] = os.urandom,
        allocate_index: Callable[[], int] | None = None,
        cookie_checker: CookieChecker | None = None,
    ) -> None:
        """``unix_time_offset`` maps ``now`` to wall time for the TAI64N stamp (peers reject a stamp
        older than one they saw, so it must grow across restarts); the driver passes
        ``time.time() - time.monotonic()``. ``allocate_index`` lets a device keep indices unique."""
        self.local_private = local_private
        self.remote_public = remote_public
        self._local_raw = local_private.raw
        self._remote_raw = remote_public.raw
        self._mtu = mtu
        self._unix_offset = unix_time_offset
        self._random = random_bytes
        self._allocate_index = allocate_index or (lambda: int.from_bytes(random_bytes(4), "little"))
        # a device shares its checker: the cookies it issues before a peer is known must verify here
        self._checker = cookie_checker or CookieChecker(local_private.public().raw, random_bytes)
        self._generator = CookieGenerator(self._remote_raw)
        self.timers = Timers(persistent_keepalive)
        self.keypairs = Keypairs()
        self._initiation: handshake.InitiatorState | None = None
        self._last_sent_handshake = float("-inf")
        self._last_initiation_consumed = float("-inf")
        self._last_timestamp = bytes(12)
        self._sent_last_minute_handshake = False
        self._staged: deque[bytes] = deque(maxlen=QUEUE_STAGED_SIZE)
        self._outbox: list[bytes | bytearray] = []
        self._inbox: list[bytes] = []
        self._events: list[Event] = []
        self.dropped = 0
        self.last_handshake: float | None = None

    # --- outputs -------------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[bytes | bytearray]:
        out, self._outbox = self._outbox, []
        return out

    def received_packets(self) -> list[bytes]:
        out, self._inbox = self._inbox, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    # --- inputs --------------------------------------------------------------------------------

    def send(self, packet: bytes, now: float) -> None:
        """Encrypt an IP packet to the peer, or stage it and start a handshake if no key is usable."""
        self.send_many((packet,), now)

    def send_many(self, packets: Iterable[bytes], now: float) -> None:
        """``send`` each packet in order; a batch pays the per-call lookups once.

        Every packet of a batch shares ``now``, so the timer rules (``_after_send``: the same dict
        updates as ``Timers.on_any_authenticated_packet_*`` / ``on_data_sent``) give the same result
        applied once per run of fast-path packets as once per packet; a run is settled before any
        slow path (staging, a rekey initiation) so the order of their effects is kept."""
        keypairs = self.keypairs
        staged = self._staged
        append = self._outbox.append
        mtu = self._mtu
        sent = 0  # fast-path packets whose timer updates are not applied yet
        data = False  # one of them carried data (not a keepalive)
        kp: Keypair | None = None
        for packet in packets:
            kp = keypairs.current
            if (
                staged
                or kp is None
                or now - kp.created >= REJECT_AFTER_TIME
                or kp.send_nonce >= REJECT_AFTER_MESSAGES
            ):
                if sent:
                    self._sent_run_timers(now, data)
                    sent, data = 0, False
                staged.append(packet)
                self._send_staged(now)
                continue
            # Keypair.seal inlined (counter checked above; padding fast case first)
            counter = kp.send_nonce
            kp.send_nonce = counter + 1
            n = len(packet)
            pad = -n & 15
            if mtu and n + pad > mtu:
                pad = padding_size(n, mtu)
            if pad:
                packet = packet + _PAD[:pad]
            append(
                _HEADER_PACK(MESSAGE_TRANSPORT_TYPE, kp.remote_index, counter)
                + kp.send_aead.encrypt(_NONCE_PACK(counter), packet, None)
            )
            sent += 1
            if n:
                data = True
            # _keep_key_fresh_sending inlined: the initiator rekeys after REKEY_AFTER_MESSAGES/_TIME
            if kp.is_initiator and (
                kp.send_nonce > REKEY_AFTER_MESSAGES or now - kp.created > REKEY_AFTER_TIME
            ):
                self._sent_run_timers(now, data)
                sent, data = 0, False
                self._send_initiation(now, is_retry=False)
        if sent:
            self._sent_run_timers(now, data)

    def _sent_run_timers(self, now: float, data: bool) -> None:
        """``_after_send`` inlined for the hot path: the same dict updates as the named rules
        ``Timers.on_any_authenticated_packet_traversal``, ``_sent`` and ``on_data_sent``."""
        timers = self.timers
        deadlines = timers.deadlines
        if timers.persistent_keepalive > 0:
            deadlines[_PERSISTENT_KEEPALIVE] = now + timers.persistent_keepalive
        if _SEND_KEEPALIVE in deadlines:
            del deadlines[_SEND_KEEPALIVE]
        if data and _NEW_HANDSHAKE not in deadlines:
            deadlines[_NEW_HANDSHAKE] = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()

    def initiate(self, now: float, *, force: bool = False) -> None:
        """Start a handshake now (``force`` ignores the REKEY_TIMEOUT rate limit, e.g. to rekey in tests)."""
        if force:
            self._last_sent_handshake = float("-inf")
        self._send_initiation(now, is_retry=False)

    def receive(self, datagram: bytes, now: float, *, src: bytes = b"", under_load: bool = False) -> None:
        """Handle one datagram from the peer. ``src`` (the sender's address bytes) keys cookies;
        ``under_load`` makes handshakes require a valid mac2 and answers others with a cookie reply."""
        self.receive_many((datagram,), now, src=src, under_load=under_load)

    def receive_many(
        self, datagrams: Iterable[bytes], now: float, *, src: bytes = b"", under_load: bool = False
    ) -> None:
        """``receive`` each datagram in order; a batch pays the per-call lookups once.

        The transport-data case is inlined here (the hot path); everything else goes through
        ``_receive_other``. As in ``send_many``, the timer rules of a run of transport messages at
        one ``now`` are applied once (``_after_received_run``: the same dict updates as the named
        ``Timers.on_*`` rules, which stay the readable source of truth), settled before any slow path."""
        keypairs = self.keypairs
        inbox_append = self._inbox.append
        authenticated = 0  # transport messages (keepalives included) not yet applied to the timers
        data = 0  # of which carried an IP packet
        for datagram in datagrams:
            try:
                if len(datagram) < MESSAGE_TRANSPORT_SIZE or datagram[0] != MESSAGE_TRANSPORT_TYPE:
                    if authenticated:
                        self._after_received_run(now, data)
                        authenticated = data = 0
                    self._receive_other(datagram, now, src, under_load)
                    continue
                msg_type, receiver, counter = _HEADER_UNPACK(datagram)
                if msg_type != MESSAGE_TRANSPORT_TYPE:
                    raise ParseError("not a WireGuard message type")  # the 3 reserved bytes are not 0
                kp = keypairs.current
                if kp is None or kp.local_index != receiver:
                    kp = keypairs.lookup(receiver)
                    if kp is None:
                        raise CryptoError("transport message for an unknown index")
                if now - kp.created >= REJECT_AFTER_TIME:
                    raise CryptoError("transport message under an expired keypair")
                # Keypair.open inlined: authenticate first, then the replay window
                plain = kp.recv_aead.decrypt(_NONCE_PACK(counter), memoryview(datagram)[16:], None)
                if not kp.replay.validate_counter(counter, REJECT_AFTER_MESSAGES):
                    raise CryptoError("replayed or too old transport counter")
                if kp is keypairs.next:  # Keypairs.received_with: key confirmation rotates it in
                    if authenticated:
                        self._after_received_run(now, data)
                        authenticated = data = 0
                    self._confirmed(kp, now)
                # _keep_key_fresh_receiving's precondition inlined (it only concerns an initiator's
                # current keypair nearing REJECT_AFTER_TIME)
                current = keypairs.current
                if (
                    current is not None
                    and current.is_initiator
                    and now - current.created > _LAST_MINUTE_REKEY_AGE
                    and not self._sent_last_minute_handshake
                ):
                    if authenticated:
                        self._after_received_run(now, data)
                        authenticated = data = 0
                    self._keep_key_fresh_receiving(now)
                authenticated += 1
                if not plain:
                    continue  # keepalive
                # strip WireGuard padding to the length the IP header claims
                n = len(plain)
                version = plain[0] >> 4
                if version == 4 and n >= 20:
                    length = (plain[2] << 8) | plain[3]
                elif version == 6 and n >= 40:
                    length = 40 + ((plain[4] << 8) | plain[5])
                else:
                    raise ParseError("transport payload is not an IP packet")
                if length > n:
                    raise ParseError("transport payload is not an IP packet")
                inbox_append(plain if length == n else plain[:length])
                data += 1
            except (ParseError, CryptoError, InvalidTag):  # InvalidTag: forged or corrupted
                self.dropped += 1
        if authenticated:
            self._after_received_run(now, data)

    def _after_received_run(self, now: float, data: int) -> None:
        """Timers after a run of authenticated transport messages at one ``now``: traversal and
        received for each, then ``on_data_received`` ``data`` times (the first arms SEND_KEEPALIVE
        if it is idle, any further one asks for another keepalive)."""
        timers = self.timers
        deadlines = timers.deadlines
        if timers.persistent_keepalive > 0:  # on_any_authenticated_packet_traversal
            deadlines[_PERSISTENT_KEEPALIVE] = now + timers.persistent_keepalive
        if _NEW_HANDSHAKE in deadlines:  # on_any_authenticated_packet_received
            del deadlines[_NEW_HANDSHAKE]
        if data:  # on_data_received, ``data`` times
            if _SEND_KEEPALIVE in deadlines or data > 1:
                timers.need_another_keepalive = True
            if _SEND_KEEPALIVE not in deadlines:
                deadlines[_SEND_KEEPALIVE] = now + KEEPALIVE_TIMEOUT

    def _receive_other(self, datagram: bytes, now: float, src: bytes, under_load: bool) -> None:
        t = messages.message_type(datagram)
        if t == MESSAGE_TRANSPORT_TYPE:
            messages.parse_transport_header(datagram)  # raises: too short for the fast path
        elif t == MESSAGE_INITIATION_TYPE:
            self._receive_initiation(datagram, now, src, under_load)
        elif t == MESSAGE_RESPONSE_TYPE:
            self._receive_response(datagram, now, src, under_load)
        elif t == MESSAGE_COOKIE_REPLY_TYPE:
            self._receive_cookie_reply(datagram, now)

    def tick(self, now: float) -> None:
        """Run every timer that is due at ``now``."""
        for timer in self.timers.due(now):
            if timer == Timer.RETRANSMIT_HANDSHAKE:
                if self.timers.handshake_attempts > MAX_TIMER_HANDSHAKES:
                    self._staged.clear()
                    self._initiation = None
                    self.timers.on_gave_up(now)
                    self._events.append(HandshakeGaveUp())
                else:
                    self.timers.handshake_attempts += 1
                    self._send_initiation(now, is_retry=True)
            elif timer == Timer.SEND_KEEPALIVE:
                self._send_keepalive(now)
                if self.timers.need_another_keepalive:
                    self.timers.need_another_keepalive = False
                    self.timers.deadlines[Timer.SEND_KEEPALIVE] = now + KEEPALIVE_TIMEOUT
            elif timer == Timer.NEW_HANDSHAKE:
                self._send_initiation(now, is_retry=False)
            elif timer == Timer.ZERO_KEY_MATERIAL:
                self.keypairs.clear()
                self._initiation = None
                self._events.append(KeyMaterialZeroed())
            elif timer == Timer.PERSISTENT_KEEPALIVE:
                self._send_keepalive(now)

    # --- sending -------------------------------------------------------------------------------

    def _jitter(self) -> float:
        ms = int.from_bytes(self._random(2), "little") % int(REKEY_TIMEOUT_JITTER_MAX * 1000)
        return ms / 1000

    def _after_send(self, now: float, *, data: bool) -> None:
        timers = self.timers
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_sent()
        if data:
            timers.on_data_sent(now, self._jitter)

    def _keep_key_fresh_sending(self, kp: Keypair, now: float) -> None:
        if kp.is_initiator and (kp.send_nonce > REKEY_AFTER_MESSAGES or now - kp.created > REKEY_AFTER_TIME):
            self._send_initiation(now, is_retry=False)

    def _send_keepalive(self, now: float) -> None:
        if not self._staged:
            self._staged.append(b"")
        self._send_staged(now)

    def _send_staged(self, now: float) -> None:
        kp = self.keypairs.current
        if kp is None or now - kp.created >= REJECT_AFTER_TIME or kp.send_nonce >= REJECT_AFTER_MESSAGES:
            self._send_initiation(now, is_retry=False)
            return
        while self._staged:
            packet = self._staged.popleft()
            self._outbox.append(kp.seal(packet, self._mtu))
            self._after_send(now, data=bool(packet))
        self._keep_key_fresh_sending(kp, now)

    def _send_initiation(self, now: float, *, is_retry: bool) -> None:
        if not is_retry:
            self.timers.handshake_attempts = 0
        if now - self._last_sent_handshake < REKEY_TIMEOUT:
            return
        self._last_sent_handshake = now
        msg, self._initiation = handshake.create_initiation(
            self._local_raw,
            self._remote_raw,
            self._allocate_index(),
            now + self._unix_offset,
            self._random(32),
        )
        buf = bytearray(msg.emit())
        self._generator.add_macs(buf, now)
        self._outbox.append(bytes(buf))
        self.timers.on_any_authenticated_packet_traversal(now)
        self.timers.on_any_authenticated_packet_sent()
        self.timers.on_handshake_initiated(now, self._jitter())

    # --- receiving -----------------------------------------------------------------------------

    def _check_macs(self, datagram: bytes, now: float, src: bytes, under_load: bool, sender: int) -> bool:
        """mac1 always; under load a missing/stale mac2 earns the sender a cookie reply instead."""
        if not self._checker.check_mac1(datagram):
            raise CryptoError("bad mac1")
        if under_load and not self._checker.check_mac2(datagram, src, now):
            self._outbox.append(self._checker.create_reply(datagram, sender, src, now))
            return False
        return True

    def _receive_initiation(self, datagram: bytes, now: float, src: bytes, under_load: bool) -> None:
        msg = messages.parse_initiation(datagram)
        if not self._check_macs(datagram, now, src, under_load, msg.sender):
            return
        self.accept_initiation(handshake.consume_initiation(self._local_raw, msg), now)

    def accept_initiation(self, consumed: handshake.ConsumedInitiation, now: float) -> None:
        """An initiation whose macs were checked and whose DH was done (by a ``Device``, which had to
        decrypt the static key to find this peer: doing it again would double the DH cost).
        Raises ``CryptoError`` for a replay, a flood or another peer's key; the caller counts it."""
        if consumed.remote_static != self._remote_raw:
            raise CryptoError("initiation from an unknown static key")
        if not tai64n.after(consumed.timestamp, self._last_timestamp):
            raise CryptoError("replayed handshake initiation (timestamp not newer)")
        if now - self._last_initiation_consumed <= HANDSHAKE_INITIATION_RATE:
            raise CryptoError("handshake initiation flood")
        self._last_timestamp = consumed.timestamp
        self._last_initiation_consumed = now
        self._initiation = None
        self.timers.on_any_authenticated_packet_traversal(now)
        self.timers.on_any_authenticated_packet_received()
        resp, keys = handshake.create_response(consumed, self._allocate_index(), self._random(32))
        buf = bytearray(resp.emit())
        self._generator.add_macs(buf, now)
        self.keypairs.install(Keypair(keys, now))
        self._outbox.append(bytes(buf))
        self.timers.on_session_derived(now)
        self.timers.on_any_authenticated_packet_traversal(now)
        self.timers.on_any_authenticated_packet_sent()

    def _receive_response(self, datagram: bytes, now: float, src: bytes, under_load: bool) -> None:
        msg = messages.parse_response(datagram)
        state = self._initiation
        if state is None or msg.receiver != state.local_index:
            raise CryptoError("response to no outstanding initiation")
        if not self._check_macs(datagram, now, src, under_load, msg.sender):
            return
        keys = handshake.consume_response(state, self._local_raw, msg)
        self._initiation = None
        self.keypairs.install(Keypair(keys, now))
        self.last_handshake = now
        self.timers.on_any_authenticated_packet_traversal(now)
        self.timers.on_any_authenticated_packet_received()
        self.timers.on_session_derived(now)
        self._handshake_complete(now)
        self._events.append(HandshakeCompleted(keys.local_index, is_initiator=True))
        self._send_keepalive(now)  # confirms the keypair to the responder at once

    def _receive_cookie_reply(self, datagram: bytes, now: float) -> None:
        reply = messages.parse_cookie_reply(datagram)
        nxt = self.keypairs.next
        pending = {s.local_index for s in (self._initiation,) if s is not None}
        if nxt is not None:
            pending.add(nxt.local_index)
        if reply.receiver not in pending:
            raise CryptoError("cookie reply for an unknown index")
        self._generator.consume_reply(reply, now)

    def _handshake_complete(self, now: float) -> None:
        self.timers.on_handshake_complete()
        self._sent_last_minute_handshake = False
        self.last_handshake = now

    def _confirmed(self, kp: Keypair, now: float) -> None:
        """The first transport message under ``next`` confirmed it (responder side)."""
        self.keypairs.received_with(kp)
        self._handshake_complete(now)
        self._events.append(HandshakeCompleted(kp.local_index, is_initiator=False))
        if self._staged:
            self._send_staged(now)

    def _keep_key_fresh_receiving(self, now: float) -> None:
        if self._sent_last_minute_handshake:
            return
        kp = self.keypairs.current
        if kp is not None and kp.is_initiator and now - kp.created > _LAST_MINUTE_REKEY_AGE:
            self._sent_last_minute_handshake = True
            self._send_initiation(now, is_retry=False)
