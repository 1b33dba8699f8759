"""No actor reads or writes another actor's objects (issue 15, part 1): what every actor of a running
device was spawned with is a message or an immutable value, and no mutable object is handed to two
actors. Checked on a live device pair (every spawn passes the tracer, so a recording tracer sees every
actor the tree makes, data plane and flows included), not on a list of classes that could go stale.

The exceptions are listed with why they remain; the test fails as well when one is no longer needed,
so the list only shrinks."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pytsnet import ActorDevice, Config
from pytsnet.actors.runtime import ActorRef, Supervisor, Tracer
from pytsnet.localnet.server import LocalTailnet
from pytsnet.messages.base import Message
from pytsnet.wire.keys import NodePrivate

ALLOWED: dict[tuple[str, str], str] = {
    ("events", "publish"): "the facade's inbox: the one place a callback crosses into the app's threads",
    ("control", "publish"): "DeviceState reaches the facade in step with the runner's transition (logout()"
                            " and up() read the state as their ask returns; via the events actor it lags)",
    ("control", "store"): "the device's persistence, an I/O resource like a socket: handed over at spawn"
                          " (the facade reads it only before, in check_state), never given to another actor",
    ("dataplane", "build"): "the facade's subtree builder (it hands the device the new netstack handle)",
    ("dns", "forward"): "the facade's forwarder: a forwarded DNS query goes out on a UDP socket of the"
                        " device's netstack (an I/O resource like the store; the actor calls it off-thread)",
    ("netstack", "system"): "the netstack spawns its flows on the system itself (issue 15: flows sup)",
    ("netstack", "registry"): "FlowRegistry, shared with the facade's Netstack handle",
    ("flow", "channel"): "a flow actor's channel: the app's end of the stream (netstack: issue 15)",
    ("flow", "conn"): "the sans-IO TCP connection the netstack hands its flow actor (netstack: issue 15)",
    ("flow", "queue_signal"): "the local congestion episode counter the flows of one netstack share (issue"
                              " 14: fairness): one int, read and bumped under the GIL; telling 1,000 flows"
                              " a message per episode would load the queue the signal is about",
    ("peerapi", "acceptor"): "the device's peerAPI listener (Bindings keep it across netstacks), an I/O"
                             " resource like a socket: only the server accepts on it",
    ("peerapi", "system"): "the server spawns each connection's actor on the system (as the netstack"
                           " spawns its flows)",
    ("cert", "store"): "20a: the device's state store, where the cert manager alone keeps the ACME account"
                       " key and the certs (Go's certStateStore over the same ipn.StateStore)",
}
"""(role, parameter) → why it is not a message yet. A role is the actor's name, or ``flow`` for any
of the netstack's per-flow actors."""

SHARED_ALLOWED: dict[frozenset[str], str] = {
    frozenset({"events", "control"}): "the device's event callback (see ALLOWED's control publish)",
    frozenset({"netstack", "peerapi"}): "the device's ActorSystem: both spawn per-connection actors on it",
    frozenset({"control", "cert"}): "20a: the state store; each actor owns its own keys in it (see ALLOWED)",
}

ALLOWED.update({
    ("serve", "store"): "the device's persistence: the ServeManager keeps the serve config there (Go's"
                        " _serve/<profile> key), as the control runner keeps the node's",
    ("serve", "listeners"): "the facade's listener table of served ports (Bindings listeners, I/O resources"
                            " like sockets that outlive a restarted manager); only Serve's actors use it",
    ("serve", "system"): "the manager spawns a port server per served port on the system (as peerapi)",
    ("serve", "certs"): "the device's certificate provider (ACME or the app's): called off-thread per TLS"
                        " connection, an I/O resource like the DNS forwarder",
})
SHARED_ALLOWED.update({
    frozenset({"control", "cert", "serve"}): "the state store (a locked key/value file): each actor owns its"
                                             " keys (Serve: _serve/default)",
    frozenset({"netstack", "peerapi", "serve"}): "the device's ActorSystem: all three spawn actors on it",
})

ALLOWED.update({
    ("peerapi", "taildrop"): "the device's Taildrop directory (TaildropStore: files on disk behind one lock),"
                             " an I/O resource like the state store: peerAPI connection actors write the"
                             " files peers PUT into it",
    ("taildrop", "store"): "the same directory: the janitor deletes partial files nobody resumed (Go's"
                           " deleteDelay)",
})
SHARED_ALLOWED[frozenset({"peerapi", "taildrop"})] = "the Taildrop directory (see ALLOWED)"

ALLOWED[("peerapi", "ingress")] = ("the facade's Funnel listener table (port → handler, locked): Funnel"
                                   " listeners register in it and a peerAPI connection hands its flow to"
                                   " the app-side listener it names, which no actor message reaches")

ALLOWED.update({
    ("serve", "funnel"): "the per-port queues of public connections handed over by the peerAPI (a tailnet"
                         " flow cannot travel in a message); bounded, locked, outlives the serve actors",
    ("serve", "ingress"): "the Funnel listener table (see peerapi ingress): the manager publishes which"
                          " targets Serve takes after each applied config",
})
SHARED_ALLOWED[frozenset({"peerapi", "serve"})] = ("the Funnel listener table and the public-connection"
                                                    " queues: the peerAPI hands over, Serve takes (20g)")


def _immutable(v: Any) -> bool:
    """A message, a plain value, a ref (an address: it only carries messages), or a frozen record of
    those."""
    if v is None or isinstance(v, bool | int | float | str | bytes | enum.Enum | Message | NodePrivate
                                  | ActorRef | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return True
    if isinstance(v, type) and issubclass(v, Message):
        return True
    if isinstance(v, tuple | frozenset):
        return all(_immutable(x) for x in v)
    frozen = dataclasses.is_dataclass(v) and v.__dataclass_params__.frozen  # type: ignore[union-attr]
    if frozen and not isinstance(v, type):
        return all(_immutable(getattr(v, f.name)) for f in dataclasses.fields(v))
    return False


def _role(name: str) -> str:
    return "flow" if name.startswith("netstack-") else name


def _params(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    import inspect

    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for i, v in enumerate(args):
        yield (names[i] if i < len(names) else f"arg{i}"), v
    yield from kwargs.items()


@pytest.fixture
def spawns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, type, tuple[Any, ...],
                                                                             dict[str, Any]]]:
    seen: list[tuple[str, str, type, tuple[Any, ...], dict[str, Any]]] = []
    real = Tracer.spawn

    def spy(self: Tracer, system: Any, cell: Any) -> None:
        spec = cell.spec
        seen.append((system.name, cell.name, spec.actor_cls, spec.args, dict(spec.kwargs)))
        real(self, system, cell)

    monkeypatch.setattr(Tracer, "spawn", spy)
    monkeypatch.setenv("PYTSNET_TRACE", str(tmp_path / "trace.jsonl"))

    async def run() -> None:
        with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
            key = net.create_authkey(reusable=True)

            def cfg(name: str) -> Config:
                return Config(dir=tmp_path / name, hostname=name, auth_key=key, control_url=net.control_url,
                              bind_host="127.0.0.1")

            async with ActorDevice(cfg("a")) as a, ActorDevice(cfg("b")) as b:
                await a.up(20)
                await b.up(20)
                lst = await b.listen(7200)
                with anyio.fail_after(20):
                    while not any(p.hostname == "b" for p in a.peers()):
                        await anyio.sleep(0.05)
                    stream = await a.tcp_connect("b", 7200, timeout=20)
                    conn = await lst.accept()
                    await stream.send(b"ping")
                    assert await conn.receive() == b"ping"

    anyio.run(run)
    return seen


def test_every_device_actor_gets_messages_and_no_actor_shares_a_mutable_object(spawns: list[Any]) -> None:
    found: dict[tuple[str, str], str] = {}
    holders: dict[int, set[str]] = defaultdict(set)
    kept: dict[int, Any] = {}
    roles = set()
    for _system, name, cls, args, kwargs in spawns:
        if issubclass(cls, Supervisor):
            continue  # its args are its children's specs, each checked when it spawns
        role = _role(name)
        roles.add(role)
        for param, v in _params(cls, args, kwargs):
            if _immutable(v):
                continue
            found[(role, param)] = f"{cls.__name__}({param}={type(v).__name__})"
            holders[id(v)].add(f"{_system}/{role}")
            kept[id(v)] = v  # keep it alive: ids stay unique
    assert {"peers", "wgengine", "magicsock.udp", "magicsock.disco", "magicsock.stun", "netstack",
            "flow"} <= roles, roles  # the premise: the data plane and a flow were spawned
    unexpected = {k: v for k, v in found.items() if k not in ALLOWED}
    assert not unexpected, f"actors spawned with shared/mutable objects: {unexpected}"
    stale = set(ALLOWED) - set(found)
    assert not stale, f"no longer needed, remove from ALLOWED: {stale}"
    shared = [frozenset(h.split("/", 1)[1] for h in hs) for hs in holders.values() if len(hs) > 1]
    shared = [s for s in shared if len(s) > 1 and s not in SHARED_ALLOWED]
    assert not shared, f"one mutable object handed to several actors: {shared}"

ALLOWED[("tka", "store")] = ("21e: the device's state store: the TKA actor reads the node record's"
                             " network-lock key there when it signs (never kept in a message; the runner"
                             " owns the record)")
SHARED_ALLOWED[frozenset({"control", "cert", "serve", "tka"})] = ("the state store (see ALLOWED): the TKA"
                                                                  " actor only reads the node record")
