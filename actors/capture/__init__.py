"""Packet capture: the actor that writes what the WireGuard engine sees to a pcap file."""

from pytsnet.actors.capture.pcap_writer import PcapWriter

__all__ = ["PcapWriter"]
