"""``ActorDevice``: the public facade of an embedded node (control side for now).

::

    dev = ActorDevice(Config(dir="state", hostname="app", auth_key="tskey-…", control_url=url))
    dev.start()
    await dev.wait_until_running(30)        # or dev.wait_until_running_blocking(30)
    async for st in dev.watch_state(): ...  # DeviceState values as they change
    dev.peers(); await dev.logout(); dev.close()

"Running" currently means registered + authorized + first netmap received; the data plane adds a
DERP-connected condition later. Its actors live in one ``ActorSystem`` per device, shaped by
``pytsnet.tree.device_tree``. An ephemeral node logs out on ``close`` (as tsnet's shutdown does).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from pytsnet.actors.control import RunnerConfig, StateStore
from pytsnet.actors.runtime import ActorStopped, ActorSystem, AskTimeout, Clock
from pytsnet.config import Config
from pytsnet.errors import (
    AuthRejected,
    DeviceClosed,
    KeyExpired,
    NeedsLogin,
    NetworkUnreachable,
    RegistrationError,
    RegistrationTimeout,
)
from pytsnet.messages.base import Message
from pytsnet.messages.control import DeviceState, Logout, LogoutDone
from pytsnet.messages.peers import GetPeers, PeerInfo, PeersChanged, PeerTable
from pytsnet.state import FileStore, MemoryStore
from pytsnet.tree import CONTROL, PEERS, device_tree
from pytsnet.wire.keys import DiscoPrivate

__all__ = ["ActorDevice", "DeviceState"]

LOGOUT_TIMEOUT = 5.0
"""tsnet gives an ephemeral node's shutdown logout 5 s."""


def _error_for(st: DeviceState) -> RegistrationError | None:
    """The permanent error a state carries, if any."""
    if st.error_kind == "auth_rejected":
        return AuthRejected(st.error)
    if st.error_kind == "key_expired":
        return KeyExpired(st.error)
    return None


class ActorDevice:
    def __init__(self, config: Config | None = None, *, store: StateStore | None = None,
                 clock: Clock | None = None, backoff_max: float = 30.0) -> None:
        self.config = (config or Config()).resolved()
        if store is None:
            store = FileStore.in_dir(self.config.dir) if self.config.dir is not None else MemoryStore()
        self.store = store
        self.disco = DiscoPrivate.generate()
        """The data plane's disco key (per process, like Go's magicsock); control learns its public half."""
        self._clock = clock
        self._backoff_max = backoff_max
        self._cond = threading.Condition()
        self._state = DeviceState(state="NoState")
        self._peers: list[PeerInfo] = []
        self._watchers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Message]]] = []
        self.system: ActorSystem | None = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> ActorDevice:
        """Start the actors; returns at once (registration proceeds in the background)."""
        if self.system is not None:
            return self
        if self._closed:
            raise DeviceClosed("device was closed")
        cfg = self.config
        runner = RunnerConfig(
            control_url=str(cfg.control_url), hostname=str(cfg.hostname), auth_key=str(cfg.auth_key or ""),
            ephemeral=cfg.ephemeral, tags=tuple(cfg.tags), disco_public=self.disco.public().to_text(),
            backoff_max=self._backoff_max)
        self.system = ActorSystem(f"device-{cfg.hostname}", clock=self._clock)
        self.system.spawn_spec(device_tree(runner, self.store, self._on_event))
        return self

    def close(self) -> None:
        """Stop the node; an ephemeral node logs out first (best effort, 5 s)."""
        if self._closed:
            return
        self._closed = True
        if self.system is not None:
            if self.config.ephemeral and self._state.state not in ("NoState", "NeedsLogin"):
                with contextlib.suppress(AskTimeout, ActorStopped, DeviceClosed):
                    self._ref(CONTROL).ask(Logout(), timeout=LOGOUT_TIMEOUT)
            self.system.shutdown()
        self._on_event(self._state.model_copy(update={"state": "Stopped"}))

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __enter__(self) -> ActorDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- events from the actors (any thread) ---------------------------------------------------------
    def _on_event(self, msg: Message) -> None:
        with self._cond:
            if isinstance(msg, DeviceState):
                self._state = msg
            elif isinstance(msg, PeersChanged):
                self._peers = list(msg.peers)
            watchers = list(self._watchers)
            self._cond.notify_all()
        for loop, q in watchers:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(q.put_nowait, msg)

    # -- state ---------------------------------------------------------------------------------------
    @property
    def state(self) -> DeviceState:
        with self._cond:
            return self._state

    def tailscale_ips(self) -> list[str]:
        """The node's tailnet addresses (without prefix length), known once registered."""
        return [a.split("/")[0] for a in self.state.addresses]

    def _check(self, st: DeviceState) -> bool:
        """True when Running; raises a permanent error at once."""
        if st.state == "Running":
            return True
        err = _error_for(st)
        if err is not None:
            raise err
        if st.state == "Stopped":
            raise DeviceClosed("device stopped")
        return False

    @staticmethod
    def _timeout_error(st: DeviceState, timeout: float) -> RegistrationError:
        if st.state == "NeedsLogin":
            return NeedsLogin(st.auth_url)
        if st.error_kind == "network_unreachable":
            return NetworkUnreachable(st.error)
        return RegistrationTimeout(f"not running after {timeout}s (state {st.state})")

    def wait_until_running_blocking(self, timeout: float) -> DeviceState:
        """Block until Running. ``AuthRejected``/``KeyExpired`` raise at once; at the timeout the
        transient reason (``NeedsLogin`` with its URL, ``NetworkUnreachable``, else
        ``RegistrationTimeout``) is raised while the node keeps trying."""
        self._require_started()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._check(self._state):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timeout_error(self._state, timeout)
                self._cond.wait(left)
            return self._state

    async def wait_until_running(self, timeout: float) -> DeviceState:
        """Async twin of ``wait_until_running_blocking``; never blocks the event loop."""
        self._require_started()
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[Message] = asyncio.Queue()
        entry = (loop, q)
        with self._cond:
            self._watchers.append(entry)
        try:
            deadline = loop.time() + timeout
            while not self._check(self.state):
                left = deadline - loop.time()
                if left <= 0:
                    raise self._timeout_error(self.state, timeout)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(q.get(), left)
            return self.state
        finally:
            with self._cond:
                self._watchers.remove(entry)

    async def watch_state(self) -> AsyncIterator[DeviceState]:
        """The current ``DeviceState``, then every change, until the device stops."""
        async for msg in self._watch(DeviceState):
            yield msg  # type: ignore[misc]

    async def watch_peers(self) -> AsyncIterator[PeersChanged]:
        """Every change to the admitted peer table (starts with the current table)."""
        async for msg in self._watch(PeersChanged):
            yield msg  # type: ignore[misc]

    async def _watch(self, kind: type[Message]) -> AsyncIterator[Message]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[Message] = asyncio.Queue()
        entry = (loop, q)
        with self._cond:
            self._watchers.append(entry)
            first: Message = self._state if kind is DeviceState else PeersChanged(peers=self._peers)
        try:
            yield first
            last = first
            if isinstance(first, DeviceState) and first.state == "Stopped":
                return
            while True:
                msg = await q.get()
                if isinstance(msg, kind) and msg != last:
                    last = msg
                    yield msg
                elif isinstance(msg, DeviceState) and msg.state == "Stopped":
                    return
        finally:
            with self._cond:
                self._watchers.remove(entry)

    # -- peers and logout ----------------------------------------------------------------------------
    def peers(self, timeout: float = 5.0) -> list[PeerInfo]:
        """The admitted peers, sorted by node ID (asks PeerTracker, the trust chokepoint)."""
        table: PeerTable = self._ref(PEERS).ask(GetPeers(), timeout=timeout)
        return list(table.peers)

    def peer_table(self, timeout: float = 5.0) -> PeerTable:
        return self._ref(PEERS).ask(GetPeers(), timeout=timeout)  # type: ignore[no-any-return]

    def logout_blocking(self, timeout: float = 15.0) -> LogoutDone:
        """Deregister from control (past Expiry) and forget the node key; state becomes NeedsLogin."""
        return self._ref(CONTROL).ask(Logout(), timeout=timeout)  # type: ignore[no-any-return]

    async def logout(self, timeout: float = 15.0) -> LogoutDone:
        return await self._ref(CONTROL).ask_async(Logout(), timeout=timeout)  # type: ignore[no-any-return]

    def _require_started(self) -> None:
        if self.system is None:
            raise DeviceClosed("call start() first")

    def _ref(self, name: str) -> Any:
        self._require_started()
        assert self.system is not None
        ref = self.system.lookup(name)
        if ref is None:
            raise DeviceClosed(f"{name} is not running")
        return ref
