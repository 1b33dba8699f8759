"""Tailscale SSH on a tailnet port: ``dev.listen_ssh`` (asyncssh over the socket bridge).

Transport: asyncssh runs on asyncio transports, so each tailnet connection is taken as a real socket
from the socket bridge (``dev.listen_socket``: a ``socketpair`` end spliced to the netstack flow) and
handed to ``asyncssh.run_server(sock)``; the accept loop is the caller's event loop
(``loop.sock_accept`` on the bridge's listening socket, whose fd is readable exactly while a connection
waits). No host socket is opened.

Authorization, in Go's two steps (``pytsnet.wire.ssh_policy``): on accept, before any SSH byte, the
caller (WhoIs of its tailnet source address) must be admitted by the netmap's current ``SSHPolicy``,
else the connection is closed at once (a client reads EOF, no ``SSH-2.0`` banner: in Go the packet
filter drops such a caller). At authentication, once the SSH user is known, the policy is evaluated
again (it may have changed): accept → session; reject, no match, or a user the rules do not map →
disconnect with Go's message; check mode (``holdAndDelegate``, 22d) follows Go's ``clientAuth`` loop:
the action's message is sent as an auth banner, the URL expanded (:func:`expand_delegate_url`) and
fetched over the Noise connection to control (the ControlRunner refuses any other host), and the
``SSHAction`` control answers decides in turn (accept, reject, or another hold), all within Go's 30
minutes; a failed fetch is retried with backoff as Go does, and a client that disconnects while held
cancels its fetch (control then forgets the pending check). Like Go, "none" authentication is offered
and succeeds for an accepted caller (any password or key the client offers instead is ignored, not
checked): the tailnet identity is the credential.

Sessions: with ``handler``, ``await handler(session)`` per session channel (an :class:`SSHSession`:
asyncssh's process plus the :class:`SSHPeer`); its return value (an int) is the exit status. Without
one, the turnkey login shell (:mod:`pytsnet.ssh.shell`), which serves only the process's own user: a
rule mapping the caller to any other local user is refused at authentication (no privilege change).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncssh

from pytsnet.messages.ssh import SshActionAnswer
from pytsnet.ssh.shell import process_user, run_login_shell
from pytsnet.wire.ssh_policy import Caller, Decision, EvalResult, admit, evaluate, expand_delegate_url
from pytsnet.wire.tailcfg.ssh import SSHAction, SSHPolicy

__all__ = ["SSHListener", "SSHPeer", "SSHSession", "SessionHandler"]

log = logging.getLogger("pytsnet.ssh")


@dataclass(frozen=True)
class SSHPeer:
    """Who is on the other end of a session (from the netmap, by the connection's tailnet source)."""

    node_name: str
    """MagicDNS FQDN (trailing dot), as WhoIs gives it."""
    hostname: str
    node_id: int
    stable_id: str
    login_name: str
    """The node owner's login ("" for a tagged node)."""
    tags: tuple[str, ...]
    addresses: tuple[str, ...]
    src: tuple[str, int]
    ssh_user: str = ""
    """The user name the client asked for."""
    local_user: str = ""
    """What the policy mapped it to."""
    accept_env: tuple[str, ...] = ()


@dataclass
class SSHSession:
    """One session channel: asyncssh's process (``command``, ``term_type``, ``stdin``/``stdout``/
    ``stderr`` streams of bytes) and the peer it belongs to."""

    process: asyncssh.SSHServerProcess[bytes]
    peer: SSHPeer


SessionHandler = Callable[[SSHSession], Awaitable[int | None]]


class _Device(Protocol):
    def listen_socket(self, port: int, backlog: int = ...) -> Any: ...
    def whois(self, addr: str) -> Any: ...
    def dataplane_info(self) -> Any: ...
    async def ssh_action_fetch(self, url: str, timeout: float, fetch_id: str = ...) -> SshActionAnswer: ...
    def ssh_action_cancel(self, fetch_id: str) -> None: ...


@dataclass
class _Stats:
    accepted: int = 0
    refused_before_banner: int = 0
    refused_at_auth: int = 0
    sessions: int = 0
    holds: int = 0
    """22d: check-mode holds followed (one per ``holdAndDelegate`` action)."""
    fetch_errors: int = 0


CHECK_TIMEOUT = 30 * 60.0
"""Go bounds a connection's whole hold-and-delegate exchange by 30 minutes."""
MAX_HOLDS = 16
"""Delegations followed for one login before refusing (Go has no count; a loop would only end at the
30-minute bound)."""
FETCH_BACKOFF_MAX = 10.0
"""Go's ``fetchSSHAction`` backs off up to 10 s between failed fetches."""
_fetch_ids = itertools.count(1)


class _Conn(asyncssh.SSHServer):
    """One connection's authorization at ``begin_auth`` (Go ``clientAuth``)."""

    def __init__(self, listener: SSHListener, peer: SSHPeer) -> None:
        self._listener = listener
        self.peer = peer

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._ssh: asyncssh.SSHServerConnection | None = conn
        self._fetch_id = ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._ssh = None
        if self._fetch_id:  # 22d: a held login whose client gave up: control forgets its check
            self._listener._cancel_fetch(self._fetch_id)

    def _banner(self, message: str) -> None:
        if message and self._ssh is not None:
            with contextlib.suppress(OSError):
                self._ssh.send_auth_banner(message if message.endswith("\n") else message + "\n")

    async def begin_auth(self, username: str) -> bool:
        d = await self._listener._decide(self.peer, username)
        if d.result is EvalResult.REJECTED_USER:
            raise asyncssh.PermissionDenied(f"tailscale: tailnet policy does not permit you to SSH as user "
                                            f"{username!r}")
        if d.result is not EvalResult.ACCEPTED or d.action is None:
            raise asyncssh.PermissionDenied("tailscale: tailnet policy does not permit you to SSH to this "
                                            "node")
        action: SSHAction = d.action
        if (action.accept or action.holdAndDelegate) and self._listener.turnkey \
                and d.local_user != process_user().pw_name:
            raise asyncssh.PermissionDenied(f"tailscale: this server runs as {process_user().pw_name!r} and "
                                            f"cannot log you in as {d.local_user!r}")
        deadline = time.monotonic() + CHECK_TIMEOUT
        holds = 0
        while True:  # Go clientAuth's action loop
            if action.accept:
                self._banner(action.message)
                break
            if action.reject:
                raise asyncssh.PermissionDenied(action.message or "tailscale: access denied")
            if not action.holdAndDelegate:
                raise asyncssh.PermissionDenied("tailscale: tailnet policy action has neither accept, reject "
                                                "nor check")
            holds += 1
            if holds > MAX_HOLDS:
                raise asyncssh.PermissionDenied("tailscale: too many delegations")
            self._banner(action.message)
            self._listener.stats.holds += 1
            url = self._listener._expand(action.holdAndDelegate, self.peer, username, d.local_user)
            self._fetch_id = f"ssh-{self._listener.port}-{next(_fetch_ids)}"
            try:
                nxt = await self._listener._fetch_action(url, deadline, self._fetch_id,
                                                         lambda: self._ssh is None)
            finally:
                self._fetch_id = ""
            if nxt is None:
                raise asyncssh.PermissionDenied("tailscale: failed to fetch next SSH action")
            action = nxt
        self.peer = SSHPeer(**{**self.peer.__dict__, "ssh_user": username, "local_user": d.local_user,
                               "accept_env": d.accept_env})
        self._listener.stats.accepted += 1
        return False  # "none" authentication succeeds, as Go's NoClientAuth

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return False


@dataclass
class SSHListener:
    """A running ``listen_ssh``: ``close()``/``aclose()`` (or ``async with``) stop it and its sessions."""

    dev: _Device
    port: int
    host_keys: list[asyncssh.SSHKey]
    handler: SessionHandler | None
    stats: _Stats = field(default_factory=_Stats)
    _sock: Any = None
    _task: asyncio.Task[None] | None = None
    _conns: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def turnkey(self) -> bool:
        return self.handler is None

    async def start(self, backlog: int) -> SSHListener:
        self._sock = await asyncio.to_thread(self.dev.listen_socket, self.port, backlog)
        self._sock.setblocking(False)
        self._task = asyncio.create_task(self._accept_loop(), name=f"ssh-accept-{self.port}")
        return self

    async def __aenter__(self) -> SSHListener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._sock is not None:
            self._sock.close()
        for c in list(self._conns):
            c.close()
        for t in list(self._tasks):
            t.cancel()

    async def aclose(self) -> None:
        self.close()
        pending = [t for t in (self._task, *self._tasks) if t is not None]
        for t in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # -- accept: the pre-banner check ---------------------------------------------------------------
    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(self._sock)
            except OSError as e:
                log.info("ssh: listener on tailnet port %d ended: %s", self.port, e)
                return
            t = asyncio.create_task(self._handle(conn, (str(addr[0]), int(addr[1]))))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    def _policy(self) -> SSHPolicy | None:
        nm = self.dev.dataplane_info().netmap
        return nm.ssh_policy if nm is not None else None

    def _peer(self, src: tuple[str, int]) -> SSHPeer | None:
        try:
            w = self.dev.whois(src[0])
        except LookupError:
            return None
        n, u = w.node, w.user
        return SSHPeer(node_name=n.name, hostname=n.hostname, node_id=n.node_id, stable_id=n.stable_id,
                       login_name="" if n.tags else u.login_name, tags=tuple(n.tags),
                       addresses=tuple(n.addresses), src=src)

    @staticmethod
    def _caller(peer: SSHPeer) -> Caller:
        return Caller(src_ip=peer.src[0], node_stable_id=peer.stable_id, login_name=peer.login_name)

    async def _admit(self, src: tuple[str, int]) -> SSHPeer | None:
        def check() -> SSHPeer | None:
            peer = self._peer(src)
            if peer is None or not admit(self._policy(), self._caller(peer), datetime.now(UTC)):
                return None
            return peer
        return await asyncio.to_thread(check)

    async def _decide(self, peer: SSHPeer, ssh_user: str) -> Decision:
        pol = await asyncio.to_thread(self._policy)
        d = evaluate(pol, self._caller(peer), ssh_user, datetime.now(UTC))
        if not d.accepted and not (d.action is not None and d.action.holdAndDelegate and not d.action.reject):
            self.stats.refused_at_auth += 1
            log.info("ssh: %s (%s) refused as %r: %s", peer.hostname, peer.src[0], ssh_user, d.result.value)
        return d

    # -- check mode ---------------------------------------------------------------------------
    def _expand(self, url: str, peer: SSHPeer, ssh_user: str, local_user: str) -> str:
        nm = self.dev.dataplane_info().netmap
        dst_id = nm.self_node.node_id if nm is not None else None
        v6 = ":" in peer.src[0]
        dst_ip = next((a.split("/")[0] for a in (nm.self_node.addresses if nm is not None else ())
                       if (":" in a) == v6), "")
        return expand_delegate_url(url, src_ip=peer.src[0], src_node_id=peer.node_id, dst_ip=dst_ip,
                                   dst_node_id=dst_id, ssh_user=ssh_user, local_user=local_user)

    async def _fetch_action(self, url: str, deadline: float, fetch_id: str,
                            gone: Callable[[], bool]) -> SSHAction | None:
        """Go ``fetchSSHAction``: GET ``url`` until control answers 200 with an ``SSHAction``, backing
        off on anything else, until ``deadline``. None: the URL was refused, the client left, or time
        ran out (the caller refuses the login: fail closed)."""
        backoff = 1.0
        while not gone():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ans = await self.dev.ssh_action_fetch(url, left, fetch_id)
            except TimeoutError as e:
                ans = SshActionAnswer(error=str(e) or "timeout")
            except OSError as e:  # DeviceClosed: no control connection will come back for this login
                log.info("ssh: fetch of the next SSH action: %s", e)
                return None
            if ans.error == "cancelled" or gone():
                return None
            if ans.status == 200 and not ans.error:
                try:
                    return SSHAction.model_validate_json(ans.body)
                except ValueError as e:
                    ans = SshActionAnswer(status=200, error=f"invalid SSHAction JSON: {str(e)[:120]}")
            elif ans.status == 400 and ans.error:  # refused by our own runner: not control's URL
                log.warning("ssh: check mode URL refused: %s", ans.error)
                self.stats.fetch_errors += 1
                return None
            self.stats.fetch_errors += 1
            log.info("ssh: fetch of the next SSH action: %s %s", ans.status or "", ans.error[:200])
            await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, FETCH_BACKOFF_MAX)
        return None

    def _cancel_fetch(self, fetch_id: str) -> None:
        self.dev.ssh_action_cancel(fetch_id)

    async def _handle(self, sock: Any, src: tuple[str, int]) -> None:
        peer = await self._admit(src)
        if peer is None:
            self.stats.refused_before_banner += 1
            log.info("ssh: tailnet port %d: %s not permitted by the SSH policy: closed before the banner",
                     self.port, src[0])
            sock.close()
            return
        holder: list[_Conn] = []

        def server_factory() -> _Conn:
            holder.append(_Conn(self, peer))
            return holder[-1]

        async def process_factory(process: asyncssh.SSHServerProcess[bytes]) -> None:
            await self._session(process, holder[0].peer)

        try:
            conn = await asyncssh.run_server(sock, server_factory=server_factory,
                                             server_host_keys=self.host_keys,
                                             process_factory=process_factory, encoding=None,
                                             allow_scp=False, agent_forwarding=False,
                                             x11_forwarding=False)
        except (OSError, asyncssh.Error) as e:
            log.info("ssh: handshake with %s failed: %s", src[0], e)
            sock.close()
            return
        self._conns.add(conn)
        try:
            await conn.wait_closed()
        finally:
            self._conns.discard(conn)

    async def _session(self, process: asyncssh.SSHServerProcess[bytes], peer: SSHPeer) -> None:
        self.stats.sessions += 1
        status = 1
        try:
            if self.handler is not None:
                status = await self.handler(SSHSession(process, peer)) or 0
            else:
                status = await run_login_shell(process, _accepted_env(process, peer.accept_env))
        except (OSError, asyncssh.Error) as e:
            log.info("ssh: session of %s ended: %s", peer.hostname, e)
        except Exception:
            log.exception("ssh: session handler of %s failed", peer.hostname)
        finally:
            process.exit(status)


def _accepted_env(process: asyncssh.SSHServerProcess[bytes], patterns: tuple[str, ...]) -> dict[str, str]:
    """The client's environment variables the rule's ``acceptEnv`` lets through (Go's glob: ``*``, ``?``)."""
    out: dict[str, str] = {}
    for k, v in (process.env or {}).items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        val = v.decode(errors="replace") if isinstance(v, bytes) else str(v)
        if any(fnmatch.fnmatchcase(key, p) for p in patterns):
            out[key] = val
    return out
