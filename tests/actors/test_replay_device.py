"""``trace replay`` of a running device's trace (issues 13 and 15): the device's actors are spawned with
messages, so the trace records each one's spawn message and a replay rebuilds it and reproduces its
replies and sends — the PeerTracker's and the StunProber's here, with the state store given as a
user would (``--state DIR``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import anyio
import pytest

from pytsnet import ActorDevice, Config
from pytsnet.actors.runtime.replay import ReplayError, replay
from pytsnet.actors.runtime.trace import read_trace
from pytsnet.cli import main
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.polling import wait_until

ACTORS = ("peers", "magicsock.stun")


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A device ``srv`` traced while a peer joins, its status and peers are read, then it closes."""
    tmp = tmp_path_factory.mktemp("replay")
    trace = tmp / "srv.jsonl"
    mp = pytest.MonkeyPatch()

    async def run() -> None:
        with LocalTailnet(tmp / "control", listen="127.0.0.1:0") as net:
            key = net.create_authkey(reusable=True)

            def cfg(name: str) -> Config:
                return Config(dir=tmp / name, hostname=name, auth_key=key, control_url=net.control_url,
                              bind_host="127.0.0.1")

            mp.setenv("PYTSNET_TRACE", str(trace))
            srv = ActorDevice(cfg("srv")).start()  # only this device is traced
            mp.delenv("PYTSNET_TRACE")
            try:
                await srv.up(20)
                async with ActorDevice(cfg("cli")) as cli:
                    await cli.up(20)
                    with anyio.fail_after(20):
                        while not any(p.hostname == "cli" for p in srv.peers()):  # GetPeers asks
                            await anyio.sleep(0.05)
                    # status() asks the StunProber (StunStatusRequest) among others
                    wait_until(lambda: bool(srv.status().endpoints), what="netcheck reported")
                    srv.status()
            finally:
                srv.close()

    try:
        anyio.run(run)
    finally:
        mp.undo()
    return trace, tmp / "srv"


def _asks(records: list[dict[str, Any]], actor: str) -> list[dict[str, Any]]:
    return [r for r in records if r["ev"] == "recv" and r["receiver"] == actor and r["kind"] == "ask"]


@pytest.mark.parametrize("actor", ACTORS)
def test_replay_of_a_running_devices_trace_reproduces_the_actors_replies(
        traced: tuple[Path, Path], actor: str, capsys: pytest.CaptureFixture[str]) -> None:
    trace, state = traced
    records = read_trace(trace)
    spawn = next(r for r in records if r["ev"] == "spawn" and r["actor"] == actor)
    assert spawn["args"] is not None  # recorded: its spawn message
    asks = _asks(records, actor)
    assert asks and all(a["reply"] is not None for a in asks)  # the premise: it answered asks
    if actor == "peers":  # and what it answered named the peer that joined
        assert any(p["hostname"] == "cli" for a in asks for p in a["reply"]["data"]["peers"])
    assert main(["trace", "replay", str(trace), "--actor", actor, "--state", str(state)]) == 0
    out = capsys.readouterr().out
    n = sum(1 for r in records if r["ev"] == "recv" and r["receiver"] == actor)
    assert f"{actor}: {n} messages replayed, identical" in out


def test_replay_of_the_device_trace_notices_a_different_input(traced: tuple[Path, Path]) -> None:
    """Not vacuous: the StunProber replayed with another seed draws other STUN transaction IDs, and
    the PeerTracker told another netmap answers otherwise."""
    trace, _ = traced
    records = read_trace(trace)
    seeded = copy.deepcopy(records)
    seed = next(r for r in seeded if r["ev"] == "recv" and r["receiver"] == "magicsock.stun"
                and r["tag"] == "magicsock.stun_seed")
    seed["msg"]["data"]["seed"] = "A" * 44
    got = replay(seeded, "magicsock.stun")
    assert not got.identical and got.divergence is not None and got.divergence.what == "sends"
    emptied = copy.deepcopy(records)
    for r in emptied:
        if r["ev"] == "recv" and r["receiver"] == "peers" and r["tag"] == "peers.netmap_update":
            r["msg"]["data"]["peers"] = []
    got = replay(emptied, "peers")
    assert not got.identical


def test_the_disco_pinger_needs_its_per_process_key_and_says_so(traced: tuple[Path, Path]) -> None:
    """Its spawn message holds the disco key, redacted; no state store has it (Go makes it per process)."""
    trace, _ = traced
    records = read_trace(trace)
    raw = trace.read_text()
    assert "<redacted:process:DiscoPrivate>" in raw
    with pytest.raises(ReplayError, match=r"DiscoPrivate.*made per process"):
        replay(records, "magicsock.disco", secrets=lambda k, f: None)
