"""Chaos: the MagicDNS resolver actor (``dns``) killed mid-query, on a device of a local tailnet.

A query is forwarded (``Config.fallback_resolvers``) to a resolver on a tailnet peer that holds its
answer back; while it waits, the ``dns`` actor is killed. The app's ``lookup`` waiting on it gets a
prompt typed failure (SERVFAIL, not a hang), the supervisor restarts the actor, the new incarnation
answers tailnet names at once (its config recovered from the bridge and PeerTracker) on quad-100
over UDP and TCP, the stale forward's late answer is ignored, and new forwards work.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import anyio
import dns.message
import dns.rcode
import dns.rrset
import pytest

from pytsnet import ActorDevice, Config
from pytsnet.actors.runtime import FaultInjector
from pytsnet.device import UnknownTailnetHost
from pytsnet.messages.dns import DnsStatus, DnsStatusRequest
from pytsnet.testing.dnsclient import tcp_query, udp_query

UPSTREAM_PORT = 5353
SLOW = "slow.example.com"


def test_killing_the_dns_actor_mid_query_is_survived(device_config: Callable[[str], Config]) -> None:
    async def main() -> None:
        async with ActorDevice(device_config("up")) as b:
            await b.up(30)
            b_ip = b.tailscale_ips()[0]
            cfg = dataclasses.replace(device_config("asker"), fallback_resolvers=(f"{b_ip}:{UPSTREAM_PORT}",))
            async with ActorDevice(cfg) as a:
                await a.up(30)
                assert a.system is not None
                ref = a.system.lookup("dns")
                assert ref is not None
                release = anyio.Event()
                seen: list[str] = []

                async def slow_upstream() -> None:
                    sock = await b.listen_packet(UPSTREAM_PORT)
                    while True:
                        data, src = await sock.recvfrom()
                        q = dns.message.from_wire(data)
                        seen.append(q.question[0].name.to_text())
                        await release.wait()
                        r = dns.message.make_response(q)
                        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.9"))
                        await sock.sendto(r.to_wire(), src)

                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(slow_upstream)
                        while not any(p.hostname == "up" for p in a.status().peers):
                            await anyio.sleep(0.05)
                        failed: list[BaseException] = []

                        async def pending_lookup() -> None:
                            try:
                                await a.lookup(SLOW, timeout=20)
                            except UnknownTailnetHost as e:
                                failed.append(e)

                        tg.start_soon(pending_lookup)
                        while not seen:  # the query is at the upstream: mid-query
                            await anyio.sleep(0.01)
                        killed_at = time.monotonic()
                        FaultInjector.kill_now(ref, "chaos: the resolver mid-query")
                        while not failed:
                            await anyio.sleep(0.01)
                        assert "SERVFAIL" in str(failed[0])
                        assert time.monotonic() - killed_at < 5  # answered at the kill, not at a timeout
                        while not (ref.incarnation == 2 and ref.is_alive):
                            await anyio.sleep(0.01)
                        # The new incarnation answers at once from the recovered netmap.
                        for query in (udp_query, tcp_query):
                            m = await query(a, "up")
                            assert [rd.to_text() for rr in m.answer for rd in rr] == [b_ip], m
                        release.set()  # the dead incarnation's forward now completes: ignored
                        m = await udp_query(a, SLOW)  # a new forward works
                        assert m.rcode() == dns.rcode.NOERROR
                        assert [rd.to_text() for rr in m.answer for rd in rr] == ["192.0.2.9"]
                        assert await a.lookup(SLOW) == ["192.0.2.9"]
                        tg.cancel_scope.cancel()
                st = ref.ask(DnsStatusRequest(), timeout=5)
                assert isinstance(st, DnsStatus) and st.counters["forwarded"] == 2, st
                assert ref.incarnation == 2

    anyio.run(main)


@pytest.mark.parametrize("kills", [3])
def test_repeated_kills_leave_quad100_serving(device_config: Callable[[str], Config], kills: int) -> None:
    """Killed again and again between queries (inside the restart budget): every query after each
    restart is answered."""
    async def main() -> None:
        async with ActorDevice(device_config("one")) as a, ActorDevice(device_config("two")) as b:
            await a.up(30)
            await b.up(30)
            assert a.system is not None
            ref = a.system.lookup("dns")
            assert ref is not None
            with anyio.fail_after(60):
                while not any(p.hostname == "two" for p in a.status().peers):
                    await anyio.sleep(0.05)
                for i in range(kills):
                    FaultInjector.kill_now(ref, f"chaos: kill {i + 1}")
                    while not (ref.incarnation == i + 2 and ref.is_alive):
                        await anyio.sleep(0.01)
                    m = await udp_query(a, "two")
                    assert [rd.to_text() for rr in m.answer for rd in rr] == b.tailscale_ips()[:1]
    anyio.run(main)
