"""``Device.receive_many`` (the batched inbound path) against per-datagram ``Device.receive``.

Two identical three-node meshes get the same pattern of inbound datagrams (from two peers,
interleaved, with replays, corruptions, spoofed sources, unknown indexes and junk); one receiver is
fed datagram by datagram, the other in one batch. Delivered packets, their order and every drop
counter must agree.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from wgengine_helpers import Link, udp

from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.wireguard.device import Device, PeerConfig

ADDRS = ["100.64.0.1", "100.64.0.2", "100.64.0.3"]  # a, b (the receiver), c
OPS = st.lists(st.tuples(st.sampled_from([0, 2]),
                         st.sampled_from(["data", "data", "data", "replay", "corrupt", "spoof",
                                          "unknown_index", "junk", "keepalive"])),
               max_size=40)


def _mesh() -> tuple[list[Device], Link]:
    keys = [NodePrivate.generate() for _ in range(3)]
    devs = [Device(k) for k in keys]
    for i, d in enumerate(devs):
        d.set_peers(PeerConfig(keys[j].public(), (f"{ADDRS[j]}/32",), 25.0) for j in range(3) if j != i)
    link = Link({d.public.raw: d for d in devs})
    for i in (0, 2):
        devs[i].send(udp(ADDRS[i], ADDRS[1], payload=b"hello"), 0.0)
        link.pump(0.0)
    devs[1].received_packets()
    return devs, link


def _datagrams(devs: list[Device], ops: list[tuple[int, str]]) -> list[bytes]:
    b = devs[1]
    last: dict[int, bytes] = {}
    out: list[bytes] = []
    for n, (i, kind) in enumerate(ops):
        sender = devs[i]
        if kind == "replay" and i in last:
            out.append(last[i])
            continue
        if kind in ("junk", "unknown_index"):
            out.append(b"\x04\x00\x00\x00\xff\xff\xff\x7f" + bytes(40) if kind == "unknown_index"
                       else bytes([n % 7]) + b"junk")
            continue
        if kind == "keepalive":
            sender.send_to(b.public, b"", 0.5)
        else:
            src = ADDRS[2 - i] if kind == "spoof" else ADDRS[i]
            sender.send(udp(src, ADDRS[1], payload=f"{n}".encode()), 0.5)
        (_, d), = sender.datagrams_to_send()
        d = bytes(d)
        last[i] = d
        if kind == "corrupt":
            d = d[:-1] + bytes([d[-1] ^ 1])
        out.append(d)
    return out


def _delivered(b: Device, senders: list[Device]) -> list[tuple[int, bytes]]:
    index = {senders[0].public.raw: 0, senders[2].public.raw: 2}
    return [(index[pub.raw], pkt) for pub, pkt in b.received_packets()]


@settings(max_examples=25, deadline=None)
@given(OPS)
def test_receive_many_equals_receive_one_by_one(ops: list[tuple[int, str]]) -> None:
    one, _ = _mesh()
    many, _ = _mesh()
    for d in _datagrams(one, ops):
        one[1].receive(d, 0.5)
    many[1].receive_many(_datagrams(many, ops), 0.5)
    assert _delivered(one[1], one) == _delivered(many[1], many)
    assert one[1].drops == many[1].drops


def test_receive_many_delivers_interleaved_peers_in_order() -> None:
    devs, _ = _mesh()
    ops = [(0, "data"), (0, "data"), (2, "data"), (0, "data"), (2, "spoof"), (2, "data"), (0, "replay")]
    devs[1].receive_many(_datagrams(devs, ops), 0.5)
    got = _delivered(devs[1], devs)
    assert [i for i, _ in got] == [0, 0, 2, 0, 2]
    assert devs[1].drops["source_not_allowed"] == 1 and devs[1].drops["peer_rejected"] == 1
