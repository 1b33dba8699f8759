"""The filter's per-``Filter`` verdict memo: it never changes a verdict, is bounded, and dies with
the rules it was computed from (fail closed on a filter change)."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.netstack import filter as pfilter
from pytsnet.netstack.filter import Filter, NetPortRange, PortRange, Rule

LOCAL = (ipaddress.ip_network("100.64.0.2/32"), ipaddress.ip_network("fd7a::2/128"),
         ipaddress.ip_network("10.9.0.0/16"))


def pkt(proto: int, src: int, dst: int, sport: int, dport: int, flags: int = 0x02) -> bytes:
    if proto == 6:
        body = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 0x50, flags, 1000, 0, 0)
    else:
        body = struct.pack("!HHHH", sport, dport, 8, 0)
    return struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(body), 0, 0, 64, proto, 0, src, dst) + body


RULES = [
    Rule((ipaddress.ip_network("100.64.0.0/24"),),
         (NetPortRange(ipaddress.ip_network("100.64.0.2/32"), PortRange(20, 30)),)),
    Rule((ipaddress.ip_network("100.64.0.7/32"),),
         (NetPortRange(ipaddress.ip_network("10.9.0.0/16"), PortRange(0, 65535)),), frozenset({17})),
]
A = int(ipaddress.IPv4Address("100.64.0.0"))
ME = int(ipaddress.IPv4Address("100.64.0.2"))
NET = int(ipaddress.IPv4Address("10.9.0.0"))

packets = st.builds(
    pkt, st.sampled_from([6, 17]), st.integers(A, A + 300), st.sampled_from([ME, NET + 5, ME + 1]),
    st.integers(1, 5), st.integers(15, 35), st.sampled_from([0x02, 0x12, 0x10]),
)


@settings(max_examples=200)
@given(st.lists(packets, max_size=60), st.integers(1, 8))
def test_memo_never_changes_a_verdict(stream: list[bytes], cache: int) -> None:
    memo = Filter(RULES, LOCAL)
    for p in stream:
        fresh = Filter(RULES, LOCAL)  # nothing memoised yet
        old_size, pfilter.VERDICT_CACHE_SIZE = pfilter.VERDICT_CACHE_SIZE, cache
        try:
            assert memo.run_in(p) == fresh.run_in(p)
        finally:
            pfilter.VERDICT_CACHE_SIZE = old_size
        assert len(memo._verdicts) <= cache


def test_a_new_filter_forgets_the_old_rules_verdicts() -> None:
    syn = pkt(6, A + 9, ME, 40000, 22)
    f = Filter(RULES, LOCAL)
    assert f.run_in(syn) and f.run_in(syn)  # allowed, and memoised
    g = f.with_rules([], LOCAL)  # the rule is revoked
    assert not g.run_in(syn)
    assert g.drops["no_rule"] == 1
    h = g.with_rules(RULES, LOCAL)
    assert h.run_in(syn)


def test_memo_is_bounded() -> None:
    f = Filter(RULES, LOCAL)
    for i in range(pfilter.VERDICT_CACHE_SIZE + 50):
        f.run_in(pkt(17, A + (i % 200), ME, 1000 + i, 25))
    assert 0 < len(f._verdicts) <= pfilter.VERDICT_CACHE_SIZE


def test_non_host_local_prefix_still_counts_as_local() -> None:
    f = Filter(RULES, LOCAL)
    assert f.run_in(pkt(17, A + 7, NET + 5, 1, 9))  # 10.9.0.0/16 is local, rule 2 allows UDP there
    assert not f.run_in(pkt(17, A + 7, NET + 70000, 1, 9))  # outside it: not local
    assert f.drops["destination_not_local"] == 1
