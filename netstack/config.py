"""StackConfig: every bound and default of the userspace stack in one immutable value.

Bounds live here so each has exactly one place to change and one test (style.md: "buffers are
bounded and the bound is a config value").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytsnet.netstack.forward import ForwardPolicy

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_MTU = 1280  # the tunnel MTU (Tailscale's default)
DEFAULT_BUFFER = 256 * 1024  # 16 KiB capped the Rust port at 1.6 Mbit/s at 80 ms RTT


@dataclass(frozen=True)
class StackConfig:
    """Addresses the stack owns, its MTU, and the caps that keep memory bounded."""

    addresses: tuple[IPAddress, ...] = field(default_factory=tuple)
    mtu: int = DEFAULT_MTU
    enable_ipv6: bool = False
    # Each is a flow's one buffer for its direction (issue 14): the app reads from the receive buffer
    # the connection delivers into (the window is its free space), and writes into the send buffer
    # segments are cut from. Each holds what the app's channel (256 KiB) and the connection (256 KiB)
    # held between them before they were one buffer. At 256 KiB, bench/e2e.py direct lost ~18% and
    # the sender ~3 µs of CPU per packet: the window closed as the reader lagged (it had had 256 KiB
    # of slack behind it) and the sender's app refilled a thread hop after each ACK
    # (docs/performance.md "Issue 14: one buffer per flow").
    send_buffer: int = 2 * DEFAULT_BUFFER
    recv_buffer: int = 2 * DEFAULT_BUFFER
    accept_backlog: int = 128
    max_tcp_connections: int = 16384
    max_half_open: int = 1024  # SYN_RECEIVED connections across all listeners
    max_half_open_per_source: int = 16  # SYN_RECEIVED connections from one remote address
    syncookies: bool = True  # answer statelessly when a half-open bound is reached (else drop the SYN)
    syncookie_period: float = 64.0  # seconds per cookie key; a cookie lives 1-2 periods (Linux: 60 s)
    max_time_wait: int = 4096  # TIME_WAIT entries (a few ints each)
    max_udp_endpoints: int = 1024
    udp_queue_datagrams: int = 256  # per-endpoint receive queue, in datagrams
    udp_queue_bytes: int = 256 * 1024  # per-endpoint receive queue, in bytes
    max_outbound_packets: int = 4096  # packets waiting for the next poll
    icmp_echo: bool = True
    ip_ttl: int = 64
    ephemeral_ports: tuple[int, int] = (49152, 65535)
    congestion_control: str = "cubic"  # TCP senders: "cubic" (RFC 9438) or "newreno" (RFC 6582)
    forward: ForwardPolicy | None = None  # subnet router / exit node: non-local destinations forwarded
    max_forward_pending: int = 256  # forwarded SYNs being dialed plus datagrams not yet taken
    max_pending_echoes: int = 64  # our own echo requests (and TSMP pings) awaiting a reply
    tsmp_peerapi_port: int = 0  # the PeerAPI port our TSMP pongs name (Go's tstun; 0: none)

    def __post_init__(self) -> None:
        addrs = tuple(ipaddress.ip_address(a) if not isinstance(a, (ipaddress.IPv4Address,
                      ipaddress.IPv6Address)) else a for a in self.addresses)
        object.__setattr__(self, "addresses", addrs)
        if not 576 <= self.mtu <= 65535:
            raise ValueError(f"mtu {self.mtu} outside 576..65535")
        if self.enable_ipv6 and self.mtu < 1280:
            raise ValueError("IPv6 needs an MTU of at least 1280")
        for name in ("send_buffer", "recv_buffer", "accept_backlog", "max_tcp_connections",
                     "max_half_open", "max_half_open_per_source", "max_time_wait", "max_udp_endpoints",
                     "udp_queue_datagrams", "udp_queue_bytes", "max_outbound_packets", "max_forward_pending",
                     "max_pending_echoes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.congestion_control not in ("cubic", "newreno"):
            raise ValueError(f"congestion_control {self.congestion_control!r}: cubic or newreno")
        if not 0 <= self.tsmp_peerapi_port <= 0xFFFF:
            raise ValueError("tsmp_peerapi_port outside 0..65535")
        if self.syncookie_period <= 0:
            raise ValueError("syncookie_period must be positive")

    @property
    def tcp_mss_v4(self) -> int:
        """MSS advertised on IPv4: MTU minus 20-byte IP and 20-byte TCP headers."""
        return self.mtu - 40

    @property
    def tcp_mss_v6(self) -> int:
        """MSS advertised on IPv6: MTU minus 40-byte IP and 20-byte TCP headers."""
        return self.mtu - 60

    def owns(self, addr: IPAddress) -> bool:
        return addr in self.addresses
