"""A router namespace's conntrack table, read and flushed without the ``conntrack`` tool.

The NAT lab's mappings live in each router's conntrack table (per network namespace). Reading it
(``/proc/net/nf_conntrack``, the calling thread's namespace) shows which mappings are alive and how
long they have left; deleting its UDP entries is what a NAT restart does to them. The flush is one
CTNETLINK ``IPCTNL_MSG_CT_DELETE`` with a ``CTA_FILTER`` on the protocol number (the kernel's
filtered flush, Linux 6.x): UDP entries go, TCP ones (DERP, control) stay. No Debian ``conntrack``
package is needed.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

from pytsnet.testing.netns import Netns

__all__ = ["CtEntry", "ct_entries", "ct_flush"]

# <linux/netlink.h>, <linux/netfilter/nfnetlink.h>, <linux/netfilter/nfnetlink_conntrack.h>
NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
NLA_F_NESTED = 1 << 15
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_DELETE = 2
CTA_TUPLE_ORIG, CTA_TUPLE_PROTO, CTA_PROTO_NUM = 1, 2, 1
CTA_FILTER, CTA_FILTER_ORIG_FLAGS = 25, 1
CTA_FILTER_FLAG_PROTO_NUM = 1 << 3
PROTOS = {"udp": socket.IPPROTO_UDP, "tcp": socket.IPPROTO_TCP}


@dataclass(frozen=True)
class CtEntry:
    """One IPv4 conntrack entry: the original tuple (inside → outside), where replies go (the NAT
    mapping: ``reply_dst:reply_dport``), and the seconds it has left."""

    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    reply_dst: str
    reply_dport: int
    timeout: int

    @property
    def mapping(self) -> str:
        """``ip:port`` the outside sees (the SNATed source)."""
        return f"{self.reply_dst}:{self.reply_dport}"


def parse_entries(text: str, proto: str = "udp") -> list[CtEntry]:
    """The ``proto`` entries of a ``/proc/net/nf_conntrack`` text."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 6 or f[0] != "ipv4" or f[2] != proto:
            continue
        kv = [x.split("=", 1) for x in f if x.count("=") == 1]
        srcs, dsts = [v for k, v in kv if k == "src"], [v for k, v in kv if k == "dst"]
        sports, dports = [v for k, v in kv if k == "sport"], [v for k, v in kv if k == "dport"]
        if len(srcs) < 2 or len(sports) < 2:
            continue
        out.append(CtEntry(proto=proto, src=srcs[0], sport=int(sports[0]), dst=dsts[0], dport=int(dports[0]),
                           reply_dst=dsts[1], reply_dport=int(dports[1]), timeout=int(f[4])))
    return out


def ct_entries(ns: Netns, proto: str = "udp") -> list[CtEntry]:
    """``ns``'s conntrack entries of ``proto`` (``udp``/``tcp``)."""
    return parse_entries(ns.sh("cat /proc/net/nf_conntrack"), proto)


def _nla(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def flush_message(proto: int, seq: int = 1) -> bytes:
    """The CTNETLINK request deleting every IPv4 entry of ``proto`` (and nothing else)."""
    tuple_orig = _nla(CTA_TUPLE_ORIG | NLA_F_NESTED, _nla(CTA_TUPLE_PROTO | NLA_F_NESTED,
                                                          _nla(CTA_PROTO_NUM, bytes([proto]))))
    flags = struct.pack("=I", CTA_FILTER_FLAG_PROTO_NUM)
    filt = _nla(CTA_FILTER | NLA_F_NESTED, _nla(CTA_FILTER_ORIG_FLAGS, flags))
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + tuple_orig + filt
    kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def ct_flush(ns: Netns, proto: str = "udp") -> None:
    """Delete every IPv4 conntrack entry of ``proto`` in ``ns``, as a NAT restart loses its mappings.

    Raises ``OSError`` with the kernel's errno if it refuses (a kernel without the filtered flush
    answers EINVAL rather than flushing more than asked)."""
    msg = flush_message(PROTOS[proto])

    def flush() -> int:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as s:
            s.settimeout(5)
            s.bind((0, 0))
            s.send(msg)
            resp = s.recv(4096)
        _, kind, _, _, _ = struct.unpack_from("=IHHII", resp)
        if kind != NLMSG_ERROR:
            return errno.EPROTO
        code: int = struct.unpack_from("=i", resp, 16)[0]
        return -code

    err = ns.call(flush)
    if err:
        raise OSError(err, f"conntrack flush ({proto}) in {ns.name}: {os.strerror(err)}")
