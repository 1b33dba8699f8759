"""Record a scripted run, replay it identically; change the logic and see the divergence located."""

from __future__ import annotations

from pathlib import Path

import actor_helpers
import pytest
from actor_helpers import BrokenTally, Sink, Tally

from pytsnet.actors.runtime import ActorSystem, ManualClock, Tracer
from pytsnet.actors.runtime.replay import ReplayError, replay_file
from pytsnet.actors.runtime.trace import read_trace
from pytsnet.cli import main
from pytsnet.messages.runtime import Count, Crash, Ping, Work
from pytsnet.testing.polling import wait_until


def record(path: Path) -> None:
    clock = ManualClock(monotonic=100.0)
    s = ActorSystem("traced", clock=clock, tracer=Tracer(path))
    try:
        sink = s.spawn(Sink, name="sink")
        tally = s.spawn(Tally, name="tally")
        for i in range(6):
            tally.tell(Work(seq=i, payload=bytes([i]) * 3))
        clock.advance(7.5)
        assert tally.ask(Count()).value == 15 * 1000 + 107
        assert tally.ask(Ping()).seq == 6
        tally.tell(Crash(reason="scripted"))
        tally.tell(Work(seq=10))
        assert tally.ask(Count()).value == 10 * 1000 + 107
        wait_until(lambda: sink.ask(Count()).value == 7)
    finally:
        s.shutdown()


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    record(path)
    return path


def test_trace_records_times_incarnations_tags_replies_and_errors(trace: Path) -> None:
    recs = read_trace(trace)
    recv = [r for r in recs if r["ev"] == "recv" and r["receiver"] == "tally"]
    assert [r["tag"] for r in recv] == ["runtime.work"] * 6 + [
        "runtime.count", "runtime.ping", "runtime.crash", "runtime.work", "runtime.count"]
    assert recv[6]["reply"] == {"tag": "runtime.total", "data": {"value": 15107}}
    assert recv[6]["mono"] == 107.5 and recv[6]["wall"] > 1e9
    assert recv[8]["error"] == "RuntimeError: scripted" and recv[8]["incarnation"] == 1
    assert recv[9]["incarnation"] == 2
    sends = [r for r in recs if r["ev"] == "send" and r["sender"] == "tally"]
    assert sends[0]["receiver"] == "sink" and sends[0]["cause"] == recv[0]["seq"]
    spawn = next(r for r in recs if r["ev"] == "spawn" and r["actor"] == "tally")
    assert spawn["class"] == "actor_helpers:Tally"


def test_replay_is_identical(trace: Path) -> None:
    result = replay_file(str(trace), "tally")
    assert result.identical, str(result.divergence)
    assert result.messages == 11


def test_changed_logic_diverges_at_the_right_message(trace: Path) -> None:
    result = replay_file(str(trace), "tally", actor_cls=BrokenTally)
    d = result.divergence
    assert d is not None and d.index == 3 and d.what == "sends" and d.tag == "runtime.work"


def test_cli_show_and_replay(trace: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["trace", "show", str(trace), "--actor", "tally", "--type", "count"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all("runtime.count" in line for line in out)  # its asks to sink too
    assert main(["trace", "show", str(trace), "--since", "1000"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["trace", "show", str(trace), "--since", "0"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(read_trace(trace))
    assert main(["trace", "replay", str(trace), "--actor", "tally"]) == 0
    assert "identical" in capsys.readouterr().out
    monkeypatch.setattr(actor_helpers, "Tally", BrokenTally)
    assert main(["trace", "replay", str(trace), "--actor", "tally"]) == 1
    assert "inbox message #3" in capsys.readouterr().out
    assert main(["trace", "replay", str(trace), "--actor", "nobody"]) == 2


def test_env_var_turns_tracing_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.jsonl"
    monkeypatch.setenv("PYTSNET_TRACE", str(path))
    s = ActorSystem("env")
    s.spawn(Sink, name="sink").ask(Count())
    s.shutdown()
    assert any(r["ev"] == "recv" and r["receiver"] == "sink" for r in read_trace(path))


def test_replay_refuses_unrebuildable_actor(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    s = ActorSystem("x", tracer=Tracer(path))
    s.spawn(actor_helpers.Echo, [], name="e").ask(Ping())
    s.shutdown()
    with pytest.raises(ReplayError):
        replay_file(str(path), "e")
