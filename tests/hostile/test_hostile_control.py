"""A hostile control server: ``/key``, the ts2021 Noise handshake and registration are genuine (the
local control server's own), then the map poll is answered with hostile bodies.

Garbage bytes, a 4 GiB length prefix, corrupt zstd, JSON that is not JSON, JSON of the wrong shape,
a peer with an unparsable key: the device must stay not-Running with a typed error, keep its control
actor alive (no crash, no restart), keep polling with backoff (not a hot reconnect loop, not a hang),
and reach Running once the server turns honest. A netmap whose peers lack keys/addresses or claim our
own key must be admitted minus exactly those peers (fail closed).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hostile_rig import Liveness, make_device

from pytsnet.actors.control import runner as control_runner
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import DiscoPrivate, NodePrivate
from pytsnet.wire.tailcfg.framing import FrameDecoder, encode_frame

WINDOW = 5.0
JSON = dict[str, Any]


def _z(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


BODIES: dict[str, Callable[[bool], bytes]] = {
    "garbage": lambda z: os.urandom(300),
    "oversize_length": lambda z: struct.pack("<I", 0xFFFFFFF0) + os.urandom(1000),
    "length_past_end": lambda z: struct.pack("<I", 3 << 20) + os.urandom(100),  # under the cap, never sent
    "corrupt_zstd": lambda z: struct.pack("<I", 64) + b"\x28\xb5\x2f\xfd" + os.urandom(60),
    "zstd_bomb": lambda z: encode_frame(b" " * (64 << 20), compress=True),
    "not_json": lambda z: encode_frame(b"{this is not json", compress=z),
    "wrong_shape": lambda z: encode_frame(b'{"Node": 5, "Peers": "x"}', compress=z),
    "deep_nesting": lambda z: encode_frame(b'{"Node":' + b"[" * 100000 + b"]" * 100000 + b"}", compress=z),
    "bad_peer_key": lambda z: encode_frame(json.dumps({"Node": {"ID": 1, "Key": "nodekey:zz"}}).encode(),
                                           compress=z),
}


class _Hostile:
    """Replaces the control server's map handler; counts polls; ``honest()`` puts the real one back."""

    def __init__(self, net: LocalTailnet, body: Callable[[bool], bytes]) -> None:
        assert net.control is not None
        self.control = net.control
        self.body = body
        self.polls: list[float] = []
        self.control._serve_map = self.serve  # type: ignore[method-assign]

    async def serve(self, req: JSON, machine: str, resp: Any) -> None:
        self.polls.append(time.monotonic())
        await resp.start(200, {"content-type": "application/octet-stream"})
        await resp.write(self.body(req.get("Compress") == "zstd"))
        await asyncio.sleep(10)  # hold the stream open: the client must not wait for more
        await resp.end()

    def honest(self) -> None:
        del self.control._serve_map


@pytest.mark.parametrize("kind", list(BODIES))
def test_hostile_map_poll_never_runs_never_crashes(tmp_path: Path, kind: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "length_past_end":
        # A frame under the 4 MiB cap that never completes is bounded by the long-poll watchdog (Go's
        # watchdogTimeout, 120 s): shortened so the test sees the device give up and poll again.
        monkeypatch.setattr(control_runner, "WATCHDOG_TIMEOUT", 1.5)
    with LocalTailnet(tmp_path / "control") as net:
        hostile = _Hostile(net, BODIES[kind])
        dev = make_device(net, tmp_path, "victim")
        try:
            wait_until(lambda: len(hostile.polls) >= 1, 10, "first map poll")
            live = Liveness(dev)
            t0 = time.monotonic()
            while time.monotonic() - t0 < WINDOW:
                assert dev.state.state != "Running", "a hostile map made the device Running"
                time.sleep(0.1)
            st = dev.state
            polls = [t for t in hostile.polls if t >= t0]
            assert len(polls) >= 2, f"{kind}: only {len(polls)} polls in {WINDOW}s (hung on the bad stream?)"
            assert len(polls) <= 25, f"{kind}: {len(polls)} polls in {WINDOW}s: no backoff"
            assert st.error_kind and st.error, f"{kind}: no typed error in {st}"
            live.assert_unharmed()
            hostile.honest()
            dev.wait_until_running_blocking(15)
        finally:
            dev.close()


def _mangled_map(frame: bytes, compress: bool) -> bytes:
    """The honest first map plus forged peers: one valid, the rest each missing one requirement."""
    [raw] = FrameDecoder(compressed=compress).feed(frame)
    msg = json.loads(raw)
    me = msg["Node"]
    ip = me["Addresses"][0].split("/")[0].rsplit(".", 1)[0]

    def peer(i: int, **change: Any) -> JSON:
        p = copy.deepcopy(me)
        addrs = [f"{ip}.{200 + i}/32"]
        p.update(ID=9000 + i, StableID=f"forged{i}", Name=f"forged{i}.example.", Addresses=addrs,
                 AllowedIPs=addrs, Key=NodePrivate.generate().public().to_text(),
                 DiscoKey=DiscoPrivate.generate().public().to_text())
        for k, v in change.items():
            if v is None:
                p.pop(k, None)
            else:
                p[k] = v
        return p

    msg["Peers"] = [*msg.get("Peers", []), peer(0), peer(1, Key=None), peer(2, DiscoKey=None),
                    peer(3, Addresses=[], AllowedIPs=[]), peer(4, Key=me["Key"]),
                    peer(5, Key="nodekey:" + "0" * 64), peer(6, KeyExpiry="2001-01-01T00:00:00Z")]
    return encode_frame(json.dumps(msg).encode(), compress=compress)


class _MangleFirst:
    def __init__(self, resp: Any, compress: bool) -> None:
        self.resp, self.compress, self.first = resp, compress, True

    async def start(self, *a: Any, **kw: Any) -> None:
        await self.resp.start(*a, **kw)

    async def write(self, data: bytes) -> None:
        if self.first:
            self.first = False
            data = _mangled_map(data, self.compress)
        await self.resp.write(data)

    async def end(self, *a: Any) -> None:
        await self.resp.end(*a)

    async def simple(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        await self.resp.simple(status, _mangled_map(body, self.compress) if body and status == 200 else body,
                               ctype)


def test_netmap_peers_missing_keys_are_not_admitted(tmp_path: Path) -> None:
    with LocalTailnet(tmp_path / "control") as net:
        assert net.control is not None
        real = net.control._serve_map

        async def serve(req: JSON, machine: str, resp: Any) -> None:
            await real(req, machine, _MangleFirst(resp, req.get("Compress") == "zstd"))

        net.control._serve_map = serve  # type: ignore[method-assign]
        dev = make_device(net, tmp_path, "victim")
        try:
            live = Liveness(dev)
            dev.wait_until_running_blocking(15)
            table = dev.peer_table()
            admitted = {p.node_id for p in table.peers}
            rejected = {r.node_id: r.reason for r in table.rejected}
            assert 9000 in admitted, f"the one valid forged peer was refused: {rejected}"
            bad = set(range(9001, 9007))
            assert not admitted & bad, f"malformed peers admitted: {sorted(admitted & bad)}"
            assert bad <= set(rejected), f"refusals not recorded: {rejected}"
            live.assert_unharmed()
        finally:
            dev.close()
