"""The UDP socket's send side, shared with the DiscoPinger and the WireGuard engine.

The UDP router's mailbox carries every outbound WireGuard burst; a disco ping or pong told there
waits behind them (issue 14 measured 8-17 ms median under a bulk transfer). The router publishes its
bound socket here under its ``ActorRef`` (stable across restarts) and the DiscoPinger sends on it
from its own thread (``sendto`` on one UDP socket from two threads is safe; each call is one
datagram). A socket object that was closed raises ``OSError`` rather than touching a reused file
descriptor, so a stale entry can only fail a send, which the caller then routes through the mailbox.

The engine writes its encrypted bursts here too (``send_burst``) for peers the router published as
direct-only (``WgDirectPaths``): one thread hand-off and mailbox hop fewer per burst. Not a flush
that publishes a new receiver index (a handshake): that goes through the router's mailbox behind
``WgLiveIndexes``, or the reader could drop the answer before the router took the index. Bytes it sends
are counted here per peer (written by the engine's thread alone, read by the router's status, as the
reader thread's inbound counters are). Bursts it tells a DERP client itself (peers published as
DERP-only) are counted here too (``count_derp``), so the router's status still shows every byte.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Sequence

from pytsnet.actors.runtime import ActorRef
from pytsnet.wire.magicsock import offload

__all__ = ["GSO_UNSUPPORTED", "count_derp", "derp_counts", "dst_for", "gso_counts", "publish", "send",
           "send_burst", "send_on", "sent_bytes", "withdraw"]

GSO_UNSUPPORTED = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)
"""What a GSO send fails with where the route or device cannot segment (Go ``isGSOError``/EIO): the
burst is sent plainly and GSO stays off for this sender."""

_lock = threading.Lock()
_sockets: dict[ActorRef, socket.socket] = {}
_sent: dict[ActorRef, dict[str, int]] = {}  # owner -> peer -> bytes the engine sent on its socket
_gso: dict[ActorRef, list[int]] = {}  # owner -> [GSO sends, datagrams in them] the engine made on it
_derp_sent: dict[ActorRef, dict[str, int]] = {}  # owner -> peer -> bytes the engine told a DERP client
_derp_full: dict[ActorRef, list[int]] = {}  # owner -> [datagrams a DERP client's full mailbox refused]


def publish(owner: ActorRef, sock: socket.socket) -> None:
    """``owner`` (the UDP router) bound ``sock``: others may send on it until ``withdraw``."""
    with _lock:
        _sockets[owner] = sock


def withdraw(owner: ActorRef, sock: socket.socket) -> None:
    """``owner`` closes ``sock``; a newer incarnation's socket is left alone."""
    with _lock:
        if _sockets.get(owner) is sock:
            del _sockets[owner]
            _sent.pop(owner, None)
            _gso.pop(owner, None)
            _derp_sent.pop(owner, None)
            _derp_full.pop(owner, None)


def send(owner: ActorRef | None, data: bytes, dst: tuple[str, int]) -> bool:
    """Send one datagram on ``owner``'s socket now. False when there is none (not bound yet, a
    replay, a test rig): the caller tells the router instead. An unreachable destination is not
    False: the path logic sees the missing pong, as with any send."""
    if owner is None:
        return False
    sock = _sockets.get(owner)
    if sock is None:
        return False
    try:
        sock.sendto(data, dst_for(sock, dst))  # 24d
    except OSError:
        return sock.fileno() != -1  # closed under us (a restart): False, the router's mailbox takes it
    return True


def dst_for(sock: socket.socket, dst: tuple[str, int]) -> tuple[str, int]:
    """``dst`` as ``sock`` can send to it: an IPv4 address v4-mapped on an IPv6 (dual-stack) socket.
    An IPv6 destination on an IPv4 socket stays as it is (the send fails; pongs go missing)."""
    if sock.family == socket.AF_INET6 and ":" not in dst[0]:
        return "::ffff:" + dst[0], dst[1]
    return dst


class BurstResult:
    """What ``send_burst`` did: whether GSO still works, and the GSO sends and datagrams it made."""

    __slots__ = ("gso", "gso_datagrams", "gso_sends")

    def __init__(self, gso: bool) -> None:
        self.gso = gso
        self.gso_sends = 0
        self.gso_datagrams = 0


def send_on(sock: socket.socket, dst: tuple[str, int], datas: Sequence[bytes | bytearray],
            gso: bool) -> BurstResult:
    """Send a burst in order: runs of equal-size datagrams as one GSO ``sendmsg`` each when ``gso``
    (``offload.gso_runs``), the rest one ``sendto`` each. An unreachable or refused destination is
    ignored (the path logic sees the missing pongs); a GSO failure of the kind a device that cannot
    segment gives turns GSO off (``result.gso``) and the run goes plainly. ``OSError`` only when the
    socket itself is closed."""
    res = BurstResult(gso)
    dst = dst_for(sock, dst)  # 24d
    if not gso or len(datas) < 2:
        for data in datas:
            _sendto(sock, data, dst)
        return res
    for i, j in offload.gso_runs(tuple(map(len, datas))):
        if j - i == 1 or not res.gso:
            for data in datas[i:j]:
                _sendto(sock, data, dst)
            continue
        try:
            sock.sendmsg((b"".join(datas[i:j]),), offload.gso_control(len(datas[i])), 0, dst)
        except OSError as e:
            if sock.fileno() == -1:
                raise
            if e.errno not in GSO_UNSUPPORTED:
                if e.errno == errno.EMSGSIZE:  # segments above the route's MTU (a 1280 underlay):
                    for data in datas[i:j]:  # the kernel will not GSO them but fragments plain sends
                        _sendto(sock, data, dst)
                continue  # unreachable/refused/full: as a plain send, the path logic copes
            res.gso = False  # this route or device cannot segment: plain sends from now on
            for data in datas[i:j]:
                _sendto(sock, data, dst)
            continue
        res.gso_sends += 1
        res.gso_datagrams += j - i
    return res


def _sendto(sock: socket.socket, data: bytes | bytearray, dst: tuple[str, int]) -> None:
    try:
        sock.sendto(data, dst)
    except OSError:
        if sock.fileno() == -1:
            raise


def send_burst(owner: ActorRef, peer: str, dst: tuple[str, int], datas: Sequence[bytes | bytearray],
               gso: bool) -> BurstResult | None:
    """The engine's direct send: ``datas`` to ``peer`` at ``dst`` on ``owner``'s socket, counted
    for the router's status. None when there is no socket (not bound, closed by a restart): the
    caller tells the router instead."""
    sock = _sockets.get(owner)
    if sock is None:
        return None
    try:
        res = send_on(sock, dst, datas, gso)
    except OSError:  # closed under us: the router's mailbox takes the burst
        return None
    counts = _sent.get(owner)
    if counts is None:
        with _lock:
            counts = _sent.setdefault(owner, {})
    counts[peer] = counts.get(peer, 0) + sum(map(len, datas))
    if res.gso_sends:
        g = _gso.get(owner)
        if g is None:
            with _lock:
                g = _gso.setdefault(owner, [0, 0])
        g[0] += res.gso_sends
        g[1] += res.gso_datagrams
    return res


def sent_bytes(owner: ActorRef, peer: str) -> int:
    """Bytes the engine sent to ``peer`` on ``owner``'s socket (since it was published)."""
    counts = _sent.get(owner)
    return counts.get(peer, 0) if counts else 0


def gso_counts(owner: ActorRef) -> tuple[int, int]:
    """(GSO sends, datagrams in them) the engine made on ``owner``'s socket (since it was published)."""
    g = _gso.get(owner)
    return (g[0], g[1]) if g else (0, 0)


def count_derp(owner: ActorRef, peer: str, nbytes: int, refused: int = 0) -> None:
    """The engine told ``owner``'s DERP client a burst of ``nbytes`` for ``peer`` itself
    (``refused`` datagrams of it: that client's mailbox stayed full). Written by the engine alone."""
    counts = _derp_sent.get(owner)
    if counts is None:
        with _lock:
            counts = _derp_sent.setdefault(owner, {})
    counts[peer] = counts.get(peer, 0) + nbytes
    if refused:
        with _lock:
            _derp_full.setdefault(owner, [0])[0] += refused


def derp_counts(owner: ActorRef, peer: str) -> tuple[int, int]:
    """(bytes the engine told a DERP client for ``peer``, datagrams refused by full DERP mailboxes
    for all peers) since ``owner`` published its socket."""
    counts = _derp_sent.get(owner)
    full = _derp_full.get(owner)
    return (counts.get(peer, 0) if counts else 0), (full[0] if full else 0)
