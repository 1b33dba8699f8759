"""The whitepaper's timers (device/timers.go) as deadlines: set from ``now``, read with ``now``.

Nothing here reads a clock. The peer records events (``on_*``), asks ``due(now)`` which timers
expired, and reports ``next_deadline()`` to its driver, which must call back by then. Because every
obligation — retransmit, keepalive, rekey, persistent keepalive — is a deadline here, a driver that
honours ``next_deadline()`` cannot let a tunnel silently lapse while idle.

These methods are the source of truth. ``Peer``'s per-packet transport path performs the same dict
updates as ``on_any_authenticated_packet_traversal``/``_sent``/``_received``, ``on_data_sent`` and
``on_data_received`` inline (a method call per rule per packet is a measurable share of the cost);
tests/wire/wireguard/test_wg_batch.py checks it against a peer that calls these methods.
"""

from __future__ import annotations

from collections.abc import Callable

from pytsnet.wire.wireguard.constants import (
    KEEPALIVE_TIMEOUT,
    REJECT_AFTER_TIME,
    REKEY_TIMEOUT,
)


class Timer:
    """Timer names (plain strings: they are dict keys on the per-packet path, where Enum hashing costs)."""

    RETRANSMIT_HANDSHAKE = "retransmit_handshake"
    SEND_KEEPALIVE = "send_keepalive"
    NEW_HANDSHAKE = "new_handshake"
    ZERO_KEY_MATERIAL = "zero_key_material"
    PERSISTENT_KEEPALIVE = "persistent_keepalive"


class Timers:
    """Deadlines for one peer; ``jitter`` is a fresh 0..334 ms value supplied by the caller."""

    def __init__(self, persistent_keepalive: float = 0.0) -> None:
        self.persistent_keepalive = persistent_keepalive
        self.deadlines: dict[str, float] = {}
        self.handshake_attempts = 0
        self.need_another_keepalive = False

    def _arm(self, t: str, at: float) -> None:
        self.deadlines[t] = at

    def _disarm(self, t: str) -> None:
        self.deadlines.pop(t, None)

    def pending(self, t: str) -> bool:
        return t in self.deadlines

    def on_handshake_initiated(self, now: float, jitter: float) -> None:
        self._arm(Timer.RETRANSMIT_HANDSHAKE, now + REKEY_TIMEOUT + jitter)

    def on_handshake_complete(self) -> None:
        self._disarm(Timer.RETRANSMIT_HANDSHAKE)
        self.handshake_attempts = 0

    def on_session_derived(self, now: float) -> None:
        self._arm(Timer.ZERO_KEY_MATERIAL, now + 3 * REJECT_AFTER_TIME)

    def on_data_sent(self, now: float, jitter: Callable[[], float]) -> None:
        """``jitter`` is only drawn when the timer is armed (this runs for every data packet)."""
        if Timer.NEW_HANDSHAKE not in self.deadlines:
            self.deadlines[Timer.NEW_HANDSHAKE] = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter()

    def on_data_received(self, now: float) -> None:
        if not self.pending(Timer.SEND_KEEPALIVE):
            self._arm(Timer.SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)
        else:
            self.need_another_keepalive = True

    def on_any_authenticated_packet_sent(self) -> None:
        self._disarm(Timer.SEND_KEEPALIVE)

    def on_any_authenticated_packet_received(self) -> None:
        self._disarm(Timer.NEW_HANDSHAKE)

    def on_any_authenticated_packet_traversal(self, now: float) -> None:
        if self.persistent_keepalive > 0:
            self._arm(Timer.PERSISTENT_KEEPALIVE, now + self.persistent_keepalive)

    def on_gave_up(self, now: float) -> None:
        self._disarm(Timer.RETRANSMIT_HANDSHAKE)
        if not self.pending(Timer.ZERO_KEY_MATERIAL):
            self._arm(Timer.ZERO_KEY_MATERIAL, now + 3 * REJECT_AFTER_TIME)

    def due(self, now: float) -> list[str]:
        """Expired timers, removed from the schedule, earliest first."""
        fired = sorted((at, t) for t, at in self.deadlines.items() if at <= now)
        for _, t in fired:
            del self.deadlines[t]
        return [t for _, t in fired]

    def next_deadline(self) -> float | None:
        return min(self.deadlines.values(), default=None)
