"""Sans-IO userspace IP/TCP/UDP/ICMP stack, modelled on smoltcp."""
