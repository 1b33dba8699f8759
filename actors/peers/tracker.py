"""PeerTracker: the peer table and the single fail-closed trust chokepoint that admits peers.

It receives whole netmaps (``NetmapUpdate``; the control side's map session already applied Go's
deltas) and keeps only peers it can trust to talk to: a peer without a valid non-zero node key,
disco key, or at least one valid address is refused, as is an expired one and one that claims our own
node key. Changes to the admitted set are
published as ``PeersChanged`` to the subscribers its spawn message names (``PeerTrackerSpawn``).

Key expiry is enforced here by time as well as by control's word: after each netmap the tracker arms
one timer (the actor clock, so simulated time drives it too) for the soonest future ``KeyExpiry``
among the admitted peers and ourselves, and when it fires admits the same netmap again, so an expired
peer leaves the table even if no map frame arrives (Go's ``nmExpiryTimer`` in
``ipn/ipnlocal/expiry.go``; Go re-checks 10 s late, we at the instant). While our own key is expired
no peer is admitted: the node must be extended or log in again.

Supervision: the tracker's state is derived (the last netmap, admitted again), so a restarted
incarnation keeps nothing of the old one; it tells the netmap's sender (``control``, the
ControlRunner) ``ResendNetmap`` and re-admits what comes back, as for any netmap. Fail closed
meanwhile: with no netmap it admits no one and publishes nothing, so the data plane keeps the
peer set last published (no peer is lost to a restart), and nothing unchecked enters it: the re-sent
netmap goes through ``admit`` with the clock of now, so a key that expired during the outage, or a
peer that never had a valid key, stays out.

Tailnet Lock (``tka_filter``, Go's ``tkaFilterNetmapLocked``): the TKA authority actor tells the
tracker the verified State (``TkaAuthorityUpdate``) and every peer that passed the checks above must
also carry a signature it accepts. FAIL CLOSED: while the netmap says the lock is on and no verified
authority at least as new as the netmap's head is held (the TKA actor restarting or still syncing), no
peer that needs a signature is admitted; peers already in the table that the held, older authority
still accepts stay (Go keeps filtering with its authority while it syncs), nothing new enters. A held
authority keeps being enforced even if a netmap stops saying the lock is on: only the TKA actor, after
verifying a disablement secret, turns it off (``enabled=False``). A restarted tracker holds nothing
and asks the TKA actor (``TkaAuthorityWanted``) as it asks control for the netmap; with a TKA actor
configured, no peer at all is admitted before that actor has answered once (also "no authority"), so
a netmap that says the lock is off cannot open the table while a verified chain is on its way (r1).
"""

from __future__ import annotations

import ipaddress

from pytsnet.actors.peers.tka_filter import NO_AUTHORITY, HeldAuthority, SignatureCache, filter_peers
from pytsnet.actors.runtime import Actor, ActorStopped, MailboxFull, StopReason, TimerHandle, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.peers import (
    ClearPeers,
    GetPeers,
    NetmapUpdate,
    PeerExpiryTick,
    PeerInfo,
    PeersChanged,
    PeerTable,
    PeerTrackerSpawn,
    RejectedPeer,
    ResendNetmap,
)
from pytsnet.messages.tka import TkaAuthorityUpdate, TkaAuthorityWanted
from pytsnet.wire.keys import DiscoPublic, KeyParseError, NodePublic
from pytsnet.wire.tka import TkaError

__all__ = ["PeerTracker", "admit"]

log = subsystem_logger("peers")

SELF_EXPIRED = "our node key expired"


def admit(peer: PeerInfo, self_key: str, now: float | None = None) -> str | None:
    """None if ``peer`` may enter the table, else why not (fail closed: anything missing refuses).

    ``now`` (Unix seconds) also refuses a peer whose ``KeyExpiry`` has passed even if control did not
    set ``Expired`` (Go's client does the same in ``ipnlocal.flagExpiredPeers``)."""
    if peer.node_id <= 0:
        return "no node ID"
    try:
        key = NodePublic.from_text(peer.node_key)
    except KeyParseError:
        return "no valid node key"
    if key.is_zero():
        return "zero node key"
    if peer.node_key == self_key:
        return "claims our own node key"
    try:
        disco = DiscoPublic.from_text(peer.disco_key)
    except KeyParseError:
        return "no valid disco key"
    if disco.is_zero():
        return "zero disco key"
    if not peer.addresses:
        return "no addresses"
    for a in [*peer.addresses, *peer.allowed_ips]:
        try:
            ipaddress.ip_network(a, strict=False)
        except ValueError:
            return f"bad address {a!r}"
    if peer.expired or (now is not None and peer.key_expired(now)):
        return "node key expired"
    return None


class PeerTracker(Actor):
    def __init__(self, spawn: PeerTrackerSpawn | None = None) -> None:
        spawn = spawn or PeerTrackerSpawn()
        self.subscribers = spawn.subscribers
        self.control = spawn.control
        """Name of the actor that sends netmaps (asked to re-send after a restart); empty: none."""
        self.tka = spawn.tka
        """Name of the TKA authority actor (asked for its authority at start); empty: none."""
        self.authority: HeldAuthority | None = None
        """The verified Tailnet Lock authority last told (None: none held, or the lock is off)."""
        self._tka_heard = not self.tka
        """The TKA actor has told this incarnation whether it holds an authority (r1): until then no
        peer is admitted, since a netmap saying the lock is off does not prove this node has none."""
        self.locked_out = False
        self.signatures = SignatureCache()
        """Verdicts by (authority head, node key, signature): a netmap re-verifies only new signatures."""
        self.table: dict[int, PeerInfo] = {}
        self.rejected: dict[int, str] = {}
        self._netmap: NetmapUpdate | None = None
        self._lock_required = False
        """An update was told that could not be used: enforce (refuse) even if the netmap says off."""
        self._expiry_timer: TimerHandle | None = None
        self.expiry_timer_at: float | None = None
        """Unix time the expiry timer is armed for (None: no key in the table expires)."""

    def on_start(self) -> None:
        if self.tka and (tka := self.ctx.lookup(self.tka)) is not None:
            try:
                tka.tell(TkaAuthorityWanted(reply_to=self.name))
            except (ActorStopped, MailboxFull):  # restarting: its new incarnation tells its subscribers
                log.info("%s cannot ask %s for the lock authority now", self.name, self.tka)
        if self.incarnation > 1 and self.control and (control := self.ctx.lookup(self.control)) is not None:
            try:
                control.tell(ResendNetmap())
            except (ActorStopped, MailboxFull):  # control is restarting: its fresh map session tells us
                log.info("%s restarted; %s cannot re-send the netmap now", self.name, self.control)

    def on_stop(self, reason: StopReason) -> None:
        self._disarm()

    @handles(NetmapUpdate)
    def on_netmap(self, msg: NetmapUpdate) -> None:
        self._netmap = msg
        self._admit_all()

    @handles(TkaAuthorityUpdate)
    def on_tka_authority(self, msg: TkaAuthorityUpdate) -> None:
        try:
            self.authority = HeldAuthority.from_update(msg)
        except (TkaError, ValueError) as e:
            log.warning("tailnet lock: unusable authority update (%s); holding none (fail closed)", e)
            self.authority = None
            self._lock_required = True
        else:
            self._lock_required = msg.enabled
        self._tka_heard = True
        if self._netmap is not None:
            self._admit_all()

    @handles(PeerExpiryTick)
    def on_expiry_tick(self, msg: PeerExpiryTick) -> None:
        self._expiry_timer = None
        if self._netmap is not None:
            self._admit_all()

    def _admit_all(self) -> None:
        msg = self._netmap
        assert msg is not None
        now = self.clock.time()
        self_expired = msg.self_node.key_expired(now)
        passed: list[PeerInfo] = []
        rejected: dict[int, str] = {}
        for p in msg.peers:
            reason = SELF_EXPIRED if self_expired else admit(p, msg.self_node.node_key, now)
            if reason is None:
                passed.append(p)
            else:
                rejected[p.node_id] = reason
        passed = self._lock_filter(msg, passed, rejected)
        self.rejected = rejected
        self._replace({p.node_id: p for p in passed})
        new = self.table
        self._arm(now, [msg.self_node, *new.values()])

    def _arm(self, now: float, nodes: list[PeerInfo]) -> None:
        """One timer for the soonest future key expiry (Go's ``nextPeerExpiry``, self included)."""
        nxt = min((n.key_expiry for n in nodes if n.key_expiry is not None and n.key_expiry > now),
                  default=None)
        if nxt == self.expiry_timer_at and self._expiry_timer is not None:
            return
        self._disarm()
        if nxt is not None:
            self._expiry_timer = self.send_after(nxt - now, PeerExpiryTick(at=nxt))
            self.expiry_timer_at = nxt

    def _disarm(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        self._expiry_timer = None
        self.expiry_timer_at = None

    def _lock_filter(self, msg: NetmapUpdate, peers: list[PeerInfo],
                     rejected: dict[int, str]) -> list[PeerInfo]:
        """Tailnet Lock over the peers that passed ``admit`` (see the module docstring)."""
        held = self.authority
        if held is None:
            self.locked_out = False
            if not (msg.tka_enabled or self._lock_required) and self._tka_heard:
                return peers
            rejected.update((p.node_id, NO_AUTHORITY) for p in peers)
            return []
        verdict = filter_peers(peers, msg.self_node, held, self.signatures)
        for note in verdict.notes:
            log.info("%s", note)
        rejected.update(verdict.rejected)
        self.locked_out = verdict.locked_out
        if not msg.tka_enabled or held.covers(msg.tka_head):
            return verdict.admitted
        # The netmap names a head this authority has not reached: only peers already admitted stay.
        kept = []
        for p in verdict.admitted:
            old = self.table.get(p.node_id)
            if old is not None and old.node_key == p.node_key and old.key_signature == p.key_signature:
                kept.append(p)
            else:
                rejected[p.node_id] = NO_AUTHORITY
        return kept

    @handles(ClearPeers)
    def on_clear(self, msg: ClearPeers) -> None:
        self._netmap = None
        self._disarm()
        self.rejected = {}
        self._replace({})

    @handles(GetPeers)
    def on_get(self, msg: GetPeers) -> PeerTable:
        known = {p.node_id: p for p in self._netmap.peers} if self._netmap is not None else {}
        rejected = [_rejected(k, v, known.get(k)) for k, v in sorted(self.rejected.items())]
        return PeerTable(peers=[self.table[k] for k in sorted(self.table)], rejected=rejected,
                         locked_out=self.locked_out)

    def _replace(self, new: dict[int, PeerInfo]) -> None:
        old = self.table
        added = [p for k, p in sorted(new.items()) if k not in old]
        changed = [p for k, p in sorted(new.items()) if k in old and old[k] != p]
        removed = sorted(k for k in old if k not in new)
        self.table = new
        if added or changed or removed:
            changes = PeersChanged(added=added, changed=changed, removed=removed,
                                   peers=[new[k] for k in sorted(new)])
            for name in self.subscribers:
                self.tell_named(name, changes)


def _rejected(node_id: int, reason: str, p: PeerInfo | None) -> RejectedPeer:
    """A refused peer with what the netmap said of it (Go's ``tkaStateFromPeer`` reads the same)."""
    if p is None:
        return RejectedPeer(node_id=node_id, reason=reason)
    return RejectedPeer(node_id=node_id, reason=reason, name=p.name, stable_id=p.stable_id,
                        addresses=list(p.addresses), node_key=p.node_key, key_signature=p.key_signature)
