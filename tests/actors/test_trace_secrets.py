"""Secrets and payloads in traces (issue 13, part 1): a running device's trace holds neither its
keys nor the app's bytes, the file is 0600, and replay takes redacted secrets from the state store."""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pytsnet import ActorDevice, Config
from pytsnet.actors.runtime import ActorSystem, ManualClock, Tracer
from pytsnet.actors.runtime.actor import Actor, handles
from pytsnet.actors.runtime.replay import ReplayError, replay_file
from pytsnet.actors.runtime.trace import read_trace
from pytsnet.cli import main
from pytsnet.localnet.server import LocalTailnet
from pytsnet.messages.dataplane import DataplaneNetmap
from pytsnet.messages.peers import PeerInfo
from pytsnet.messages.runtime import Count, Total
from pytsnet.messages.wgengine import IpPacketIn
from pytsnet.state import NODE, FileStore
from pytsnet.wire.keys import NodePrivate

MARKER = b"MARKER-7f3c9e1d-app-plaintext"


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _decoded(s: str) -> bytes:
    """The bytes a base64 string (as the trace writes bytes) stands for, else nothing."""
    for dec in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            return dec(s + "=" * (-len(s) % 4))
        except (binascii.Error, ValueError):
            continue
    return b""


def _needles(secret: bytes, text: str | None = None) -> list[bytes]:
    out = [secret, secret.hex().encode(), base64.b64encode(secret), base64.urlsafe_b64encode(secret)]
    return out + ([text.encode()] if text else [])


def test_running_device_trace_holds_no_key_and_no_app_bytes(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    trace = tmp_path / "srv.jsonl"
    monkeypatch.delenv("PYTSNET_TRACE_PAYLOADS", raising=False)

    async def run() -> ActorDevice:
        with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
            key = net.create_authkey(reusable=True)

            def cfg(name: str) -> Config:
                return Config(dir=tmp_path / name, hostname=name, auth_key=key,
                              control_url=net.control_url, bind_host="127.0.0.1")

            monkeypatch.setenv("PYTSNET_TRACE", str(trace))
            srv = ActorDevice(cfg("srv")).start()  # only this device is traced
            monkeypatch.delenv("PYTSNET_TRACE")
            try:
                lst = await srv.listen(7100)
                await srv.up(20)
                async with ActorDevice(cfg("cli")) as cli:
                    await cli.up(20)
                    with anyio.fail_after(20):
                        while not any(p.hostname == "srv" for p in cli.peers()):
                            await anyio.sleep(0.05)
                        stream = await cli.tcp_connect("srv", 7100, timeout=20)
                        conn = await lst.accept()
                        await stream.send(MARKER)
                        assert await conn.receive() == MARKER
                        await conn.send(MARKER[::-1])
                        assert await stream.receive() == MARKER[::-1]
            finally:
                srv.close()
            return srv

    srv = anyio.run(run)
    assert trace.stat().st_mode & 0o777 == 0o600
    node_text = json.loads(FileStore.in_dir(tmp_path / "srv").read_state(NODE) or b"{}")["NodePrivate"]
    node = NodePrivate.from_text(node_text)
    needles = (_needles(node.raw, node_text) + _needles(srv.disco.raw, srv.disco.to_text())
               + [MARKER, MARKER[::-1]])
    raw = trace.read_bytes()
    for n in needles:
        assert n not in raw, n[:12]
    records = read_trace(trace)
    for s in _strings(records):  # nor inside any base64-encoded field
        blob = _decoded(s) if len(s) >= 16 else b""
        for n in needles:
            assert n not in blob, n[:12]
    # The test's premise: the key and the app's packets went through the traced actors.
    tags = {r["tag"] for r in records if r["ev"] == "recv"}
    assert {"dataplane.netmap", "wgengine.ip_in", "wgengine.ip_out", "netstack.flow_packets"} <= tags, tags
    netmaps = [r for r in records if r["ev"] == "recv" and r["tag"] == "dataplane.netmap"]
    assert all(r["redacted"] == ["_node:NodePrivate"] for r in netmaps)
    assert netmaps[0]["msg"]["data"]["node_private"] == "<redacted:_node:NodePrivate>"
    pkt = next(r for r in records if r["ev"] == "recv" and r["tag"] == "wgengine.ip_in")
    assert set(pkt["msg"]["data"]["data"]["redacted_payload"]) == {"len", "sha256"}


# -- replay of a redacted trace ---------------------------------------------------------------------
class KeyUser(Actor):
    """Replies depend on the node key and on packet bytes: replay must get both back."""

    def __init__(self) -> None:
        self.seen = 0

    @handles(DataplaneNetmap)
    def netmap(self, msg: DataplaneNetmap) -> Total:
        return Total(value=int.from_bytes(NodePrivate.from_text(msg.node_private).public().raw[:6], "big"))

    @handles(IpPacketIn)
    def packet(self, msg: IpPacketIn) -> None:
        self.seen += sum(msg.data)

    @handles(Count)
    def count(self, msg: Count) -> Total:
        return Total(value=self.seen)


def _record(path: Path, key: NodePrivate, *, payloads: bool) -> None:
    s = ActorSystem("traced", clock=ManualClock(monotonic=5.0), tracer=Tracer(path, payloads=payloads))
    try:
        ref = s.spawn(KeyUser, name="keyuser")
        nm = DataplaneNetmap(node_private=key.to_text(), self_node=PeerInfo(node_key="nodekey:" + "00" * 32))
        assert ref.ask(nm).value == int.from_bytes(key.public().raw[:6], "big")
        ref.tell(IpPacketIn(data=MARKER))
        assert ref.ask(Count()).value == sum(MARKER)
    finally:
        s.shutdown()


@pytest.fixture
def key_state(tmp_path: Path) -> tuple[NodePrivate, Path]:
    key = NodePrivate.generate()
    state = tmp_path / "state"
    FileStore.in_dir(state).write_state(NODE, json.dumps({"NodePrivate": key.to_text()}).encode())
    return key, state


def test_replay_takes_redacted_secrets_from_the_state_store(
        tmp_path: Path, key_state: tuple[NodePrivate, Path], capsys: pytest.CaptureFixture[str]) -> None:
    key, state = key_state
    path = tmp_path / "t.jsonl"
    _record(path, key, payloads=True)  # payloads opted in: the packet is replayable
    raw = path.read_bytes()
    assert key.to_text().encode() not in raw and key.raw.hex().encode() not in raw
    assert base64.b64encode(MARKER) in raw  # opt-in really records the bytes
    with pytest.raises(ReplayError, match=r"NodePrivate.*--state"):
        replay_file(str(path), "keyuser")
    assert main(["trace", "replay", str(path), "--actor", "keyuser"]) == 2
    assert "--state" in capsys.readouterr().out
    assert main(["trace", "replay", str(path), "--actor", "keyuser", "--state", str(state)]) == 0
    assert "3 messages replayed, identical" in capsys.readouterr().out
    other = tmp_path / "other"  # a different device's state: its key gives a different reply
    doc = json.dumps({"NodePrivate": NodePrivate.generate().to_text()}).encode()
    FileStore.in_dir(other).write_state(NODE, doc)
    assert main(["trace", "replay", str(path), "--actor", "keyuser", "--state", str(other)]) == 1
    assert "divergence at inbox message #0" in capsys.readouterr().out


def test_payloads_are_placeholders_unless_opted_in(tmp_path: Path, key_state: tuple[NodePrivate, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    key, _ = key_state
    path = tmp_path / "t.jsonl"
    _record(path, key, payloads=False)
    raw = path.read_bytes()
    assert MARKER not in raw and base64.b64encode(MARKER) not in raw
    with pytest.raises(ReplayError, match="PYTSNET_TRACE_PAYLOADS=1"):
        replay_file(str(path), "keyuser", secrets=lambda k, f: key.to_text())
    monkeypatch.setenv("PYTSNET_TRACE_PAYLOADS", "1")
    assert Tracer(tmp_path / "env.jsonl").payloads is True


def test_config_repr_hides_the_auth_key() -> None:
    secret = "tskey-auth-" + "5e" * 24
    cfg = Config(auth_key=secret, hostname="x")
    assert secret not in repr(cfg) and secret not in repr(cfg.resolved()) and secret not in str(cfg)
    assert cfg.auth_key == secret


def test_trace_file_is_0600_even_under_umask_0_and_when_appending(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        Tracer(tmp_path / "new.jsonl").close()
    finally:
        os.umask(old)
    assert (tmp_path / "new.jsonl").stat().st_mode & 0o777 == 0o600
    loose = tmp_path / "old.jsonl"
    loose.write_text("")
    loose.chmod(0o644)
    Tracer(loose).close()
    assert loose.stat().st_mode & 0o777 == 0o600


def test_replay_with_a_corrupt_state_store_is_a_one_line_error(
        tmp_path: Path, key_state: tuple[NodePrivate, Path], capsys: pytest.CaptureFixture[str]) -> None:
    key, _ = key_state
    path = tmp_path / "t.jsonl"
    _record(path, key, payloads=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tailscaled.state").write_text("{not json")
    assert main(["trace", "replay", str(path), "--actor", "keyuser", "--state", str(bad)]) == 2
    assert "cannot replay" in capsys.readouterr().out
