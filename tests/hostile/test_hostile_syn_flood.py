"""A silent SYN flood from two tailnet peers, each in its own process, against a listener on a
victim device (this process); a legitimate client on a third peer still gets in.

The attackers are real devices on the same tailnet: their SYNs are raw IP packets told to their own
``WgEngine`` (so they arrive encrypted under their real sessions), and their netstack is cut off
(``silence_netstack``) so a SYN-ACK is never answered, not even with a RST: each half-open entry
lives its full SYN-RECEIVED lifetime. The listener's backlog fills, the rest of the flood gets SYN
cookies (no state), and the legitimate connection completes through a cookie and carries data.

Run as a script (``python test_hostile_syn_flood.py attack ...``) this file is the attacker.
"""

from __future__ import annotations

import ipaddress
import random
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from hostile_rig import Liveness, actor, make_device, silence_netstack, wait_until

from pytsnet.actors.runtime import MailboxFull
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.messages.wgengine import IpPacketsOut
from pytsnet.netstack.ipv4 import Ipv4Packet, emit_ipv4
from pytsnet.netstack.tcp import segment as tcpseg

pytestmark = [pytest.mark.serial]  # load-sensitive: run alone (Makefile, `make test`)

PORT = 7500
BACKLOG = 16
RATE = 1500  # SYNs per second per attacker (two attackers and a victim share two slow cores)
LEGIT = 3  # legitimate connections made one after another during the flood
FLOOD_FIRST = 8.0  # seconds of flood before the client dials: longer than a SYN-RECEIVED lifetime


def syn(src: str, dst: str, sport: int, rng: random.Random) -> bytes:
    """A SYN as Linux sends it (MSS, SACK, timestamps, window scale)."""
    s, d = ipaddress.IPv4Address(src), ipaddress.IPv4Address(dst)
    seg = tcpseg.TcpSegment(sport, PORT, rng.getrandbits(32), 0, tcpseg.SYN, 64240, mss=1240, wscale=7,
                            sack_permitted=True, timestamp=(rng.getrandbits(32), 0))
    return emit_ipv4(Ipv4Packet(src=s, dst=d, protocol=6, payload=tcpseg.emit_segment(seg, s, d)))


# -- the attacker process --------------------------------------------------------------------------

def attack(control_url: str, auth_key: str, state: str, name: str, victim: str) -> None:
    """Join, wait for a session to the victim, print READY; on GO flood until STOP (stdin lines)."""
    from pytsnet.config import Config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
    from e2e_rig import FAST

    dev = ActorDevice(Config(dir=Path(state), hostname=name, auth_key=auth_key, control_url=control_url,
                             backoff_max=1.0, bind_host="127.0.0.1", advertise_endpoints=True, timings=FAST,
                             stun_interval=(2.0, 3.0))).start()
    try:
        dev.wait_until_running_blocking(30)
        silence_netstack(dev)
        assert dev.system is not None
        engine = dev.system.lookup("wgengine")
        assert engine is not None
        me = dev.tailscale_ips()[0]
        rng = random.Random(name)
        def is_victim(addresses: list[str]) -> bool:
            return any(a.split("/")[0] == victim for a in addresses)

        wait_until(lambda: any(is_victim(p.addresses) for p in dev.status().peers), 30, "victim in netmap")
        silence_netstack(dev)
        # A first SYN brings the WireGuard session up before the flood starts.
        engine.tell(IpPacketsOut(packets=(syn(me, victim, 1024, rng),)))
        wait_until(lambda: any(is_victim(p.addresses) and p.has_session for p in dev.status().peers), 30,
                   "session to the victim")
        print("READY", flush=True)
        assert sys.stdin.readline().strip() == "GO"
        sent, sport, start = 0, 1025, time.monotonic()
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(sys.stdin, selectors.EVENT_READ)
        while not sel.select(0):
            due = int((time.monotonic() - start) * RATE) - sent
            if due <= 0:
                time.sleep(0.005)
                continue
            batch = []
            for _ in range(min(due, 64)):
                batch.append(syn(me, victim, sport, rng))
                sport = 1024 + (sport - 1023) % 64000
            try:
                engine.tell(IpPacketsOut(packets=tuple(batch)))
                sent += len(batch)
            except MailboxFull:
                time.sleep(0.01)
        wg = actor(dev, "wgengine").device.drops
        print(f"SENT {sent} SILENCED {wg.get('no_sink', 0)}", flush=True)
    finally:
        dev.close()


# -- the test (victim and legitimate client in this process) ----------------------------------------

def _start_attacker(net: LocalTailnet, tmp: Path, name: str, victim: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "attack", net.control_url, net.create_authkey(),
                             str(tmp / name), name, victim],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _readline(p: subprocess.Popen[str], timeout: float) -> str:
    assert p.stdout is not None
    out: list[str] = []

    def read() -> None:
        assert p.stdout is not None
        out.append(p.stdout.readline())

    import threading

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    assert out and out[0], f"attacker said nothing in {timeout} s (exit code {p.poll()})"
    return out[0].strip()


def test_silent_syn_flood_from_two_peers_denies_no_one(tmp_path: Path) -> None:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        victim = make_device(net, tmp_path, "victim")
        client = make_device(net, tmp_path, "client")
        attackers: list[subprocess.Popen[str]] = []
        try:
            victim.wait_until_running_blocking(30)
            client.wait_until_running_blocking(30)
            v_ip, c_ip = victim.tailscale_ips()[0], client.tailscale_ips()[0]
            attackers = [_start_attacker(net, tmp_path, f"attacker{i}", v_ip) for i in (1, 2)]
            assert all(_readline(p, 90) == "READY" for p in attackers)
            wait_until(lambda: len(victim.status().peers) == 3, 30, "victim sees all three peers")
            stack = actor(victim, "netstack").stack
            live = Liveness(victim)
            drops0 = dict(victim.status().drops)

            async def run() -> list[str]:
                lst = await victim.listen(PORT, backlog=BACKLOG)
                for p in attackers:
                    assert p.stdin is not None
                    p.stdin.write("GO\n")
                    p.stdin.flush()
                t0 = time.monotonic()
                await anyio.to_thread.run_sync(lambda: wait_until(
                    lambda: stack.stats["tcp_syncookies_sent"] > 200, 30, "the flood gets cookies"))
                per_source = stack.config.max_half_open_per_source
                while time.monotonic() - t0 < FLOOD_FIRST:
                    assert len(stack._pending_of) <= BACKLOG
                    assert max(stack._half_open_by_src.values(), default=0) <= per_source
                    await anyio.sleep(0.1)
                assert len(stack._pending_of) == BACKLOG  # the silent flood keeps the backlog full
                peers: list[str] = []
                for i in range(LEGIT):
                    async def serve(i: int = i) -> None:
                        s = await lst.accept()  # type: ignore[attr-defined]
                        peers.append(s.remote_address[0])
                        got = bytearray()
                        while len(got) < 64 << 10:
                            got += await s.receive(65536)
                        assert bytes(got) == bytes([i]) * (64 << 10)
                        await s.send(b"welcome %d" % i + bytes([i]) * (64 << 10))
                        await s.aclose()

                    async def dial(i: int = i) -> None:
                        c = await client.tcp_connect(v_ip, PORT)
                        await c.send(bytes([i]) * (64 << 10))
                        want = b"welcome %d" % i + bytes([i]) * (64 << 10)
                        got = bytearray()
                        while len(got) < len(want):
                            got += await c.receive(65536)
                        assert bytes(got) == want
                        await c.aclose()

                    with anyio.fail_after(30):
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(serve)
                            tg.start_soon(dial)
                    assert len(stack._pending_of) <= BACKLOG
                await lst.aclose()  # type: ignore[attr-defined]
                return peers

            peers = anyio.run(run)
            reports = []
            for p in attackers:
                assert p.stdin is not None
                p.stdin.write("STOP\n")
                p.stdin.flush()
                reports.append(_readline(p, 30).split())
            drops = victim.status().drops
            grew = {k: v - drops0.get(k, 0) for k, v in drops.items() if v != drops0.get(k, 0)}
            for r in reports:
                assert r[0] == "SENT" and int(r[1]) > 2000 and int(r[3]) > 0, r  # SYN-ACKs swallowed
            assert grew.get("netstack_tcp_syncookies_sent", 0) > 2000, grew
            assert grew.get("netstack_tcp_syncookies_validated", 0) >= 1, grew  # a legit client's cookie
            assert peers == [c_ip] * LEGIT, f"accepted a connection from an attacker: {peers}"
            assert stack.tcp_flows <= BACKLOG + 2, stack.tcp_flows
            live.assert_unharmed()
        finally:
            for p in attackers:
                if p.poll() is None:
                    p.kill()
                p.wait(10)
            client.close()
            victim.close()


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "attack":
    attack(*sys.argv[2:])
