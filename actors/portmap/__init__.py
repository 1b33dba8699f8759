"""The port mapper: maps magicsock's UDP port on the gateway (NAT-PMP, PCP, UPnP IGD) and keeps it."""
