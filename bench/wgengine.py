"""Throughput of the engine's per-packet path: route + encrypt (Device.send), index lookup + decrypt
+ anti-spoof (Device.receive), and the inbound packet filter. Run: .venv/bin/python bench/wgengine.py"""

from __future__ import annotations

import ipaddress
import struct
import time

from pytsnet.netstack.filter import Filter, NetPortRange, Rule
from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.wireguard.device import Device, PeerConfig

SIZE = 1280
N = 20000


def main() -> None:
    ka, kb = NodePrivate.generate(), NodePrivate.generate()
    a, b = Device(ka), Device(kb)
    a.set_peers([PeerConfig(kb.public(), ("100.64.0.2/32",))] + [
        PeerConfig(NodePrivate.generate().public(), (f"100.65.{i // 250}.{i % 250 + 1}/32",))
        for i in range(200)
    ])
    b.set_peers([PeerConfig(ka.public(), ("100.64.0.1/32",))])
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, SIZE, 0, 0x4000, 64, 17, 0,
                      bytes([100, 64, 0, 1]), bytes([100, 64, 0, 2]))
    pkt = hdr + struct.pack("!HHHH", 1000, 2000, SIZE - 20, 0) + bytes(SIZE - 28)
    a.send(pkt, 0.0)  # handshake
    for _ in range(3):
        for _p, d in a.datagrams_to_send():
            b.receive(bytes(d), 0.0)
        for _p, d in b.datagrams_to_send():
            a.receive(bytes(d), 0.0)
    b.received_packets()
    t0 = time.perf_counter()
    for _ in range(N):
        a.send(pkt, 1.0)
    out = a.datagrams_to_send()
    t1 = time.perf_counter()
    for _, d in out:
        b.receive(d, 1.0)  # type: ignore[arg-type]
    got = b.received_packets()
    t2 = time.perf_counter()
    me = ipaddress.ip_network("100.64.0.2/32")
    f = Filter([Rule((ipaddress.ip_network("0.0.0.0/0"),), (NetPortRange(me),))], [me])
    for _, p in got:
        f.run_in(p)
    t3 = time.perf_counter()
    assert len(got) == N and f.accepted == N
    mb = N * SIZE / 1e6
    print(f"packets={N} size={SIZE} (201 peers configured on the sender)")
    print(f"send (route+encrypt):          {N / (t1 - t0):9.0f} pkt/s  {mb / (t1 - t0) * 8:7.1f} Mbit/s")
    print(f"receive (lookup+decrypt+spoof): {N / (t2 - t1):9.0f} pkt/s  {mb / (t2 - t1) * 8:7.1f} Mbit/s")
    print(f"filter run_in:                 {N / (t3 - t2):9.0f} pkt/s")


if __name__ == "__main__":
    main()
