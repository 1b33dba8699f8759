"""Tailscale Services on the node (issue 20d): fallback TCP handlers and VIP service listeners."""
