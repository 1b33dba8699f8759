"""Chaos: the receiver's peerAPI and Taildrop actors killed mid-file, and the resume completes the file.

beta's peerAPI connection actor that is writing alpha's file is killed mid-body: that connection
ends (alpha's ``send_file`` raises a typed ``TaildropError``), the partial file stays, and alpha's
next ``send_file`` resumes at its end — the bytes beta already holds are not sent again. The Taildrop
janitor killed in between restarts and keeps the fresh partial file. While that
resume runs, beta's peerAPI server actor is killed too: it restarts, and the transfer (served by a
sibling connection actor) finishes byte-exact.
"""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

from pytsnet.actors.runtime import FaultInjector
from pytsnet.errors import TaildropError
from pytsnet.messages.taildrop import TaildropSweepNow
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import local_tailnet

MiB = 1 << 20


def test_killing_the_receivers_peerapi_actors_mid_file_is_survived(tmp_path: Path) -> None:
    data = random.Random(7).randbytes(24 * MiB)
    src = tmp_path / "chaos.bin"
    src.write_bytes(data)
    with local_tailnet(tmp_path, ["alpha", "beta"]) as tn:
        a, b = tn["alpha"], tn["beta"]
        system = b.system
        assert system is not None
        conns = system.lookup("peerapi.conns")
        assert conns is not None

        def receiving_conn() -> str | None:
            names = [n for n in system.names() if n.startswith("peerapi-c")]
            return names[0] if len(names) == 1 else None

        killed: list[str] = []

        def kill_conn(done: int, total: int | None) -> None:
            if done >= 8 * MiB and not killed:
                name = receiving_conn()
                ref = system.lookup(name) if name is not None else None
                assert ref is not None, system.names()
                FaultInjector.kill_now(ref, "chaos: the peerAPI connection writing the file")
                killed.append(name or "")

        with pytest.raises(TaildropError):
            anyio.run(lambda: a.send_file("beta", src, progress=kill_conn))
        assert killed
        wait_until(lambda: len(b.taildrop_history()) == 1, 20, "the cut upload recorded")
        first = b.taildrop_history()[0]
        assert not first.done and first.received >= 8 * MiB - 4 * MiB  # ~all that arrived before the kill
        assert b.waiting_files() == []

        # the janitor (Go's fileDeleter) killed too: it restarts and leaves a fresh partial file alone
        janitor = system.lookup("taildrop")
        assert janitor is not None and janitor.incarnation == 1
        FaultInjector.kill_now(janitor, "chaos: the Taildrop janitor")
        wait_until(lambda: janitor.incarnation == 2 and janitor.is_alive, 10, "janitor restarted")
        assert janitor.ask(TaildropSweepNow(), timeout=5).removed == []

        server = system.lookup("peerapi")
        assert server is not None
        incarnation = server.incarnation
        server_killed: list[bool] = []

        def kill_server(done: int, total: int | None) -> None:
            if done >= first.received + 4 * MiB and not server_killed:
                FaultInjector.kill_now(server, "chaos: the peerAPI server mid-file")
                server_killed.append(True)

        offset = anyio.run(lambda: a.send_file("beta", src, progress=kill_server))
        assert server_killed
        wait_until(lambda: server.incarnation == incarnation + 1 and server.is_alive, 10, "peerapi restarted")
        second = b.taildrop_history()[1]
        assert offset == first.received == second.offset
        assert second.done and second.received == len(data) - offset
        with b.open_waiting_file("chaos.bin") as f:
            assert f.read() == data
        # the restarted server takes new files
        small = tmp_path / "after.bin"
        small.write_bytes(b"after the chaos")
        anyio.run(lambda: a.send_file("beta", small))
        assert {w.name for w in b.waiting_files()} == {"chaos.bin", "after.bin"}
        assert a.status().state == "Running" and b.status().state == "Running"
