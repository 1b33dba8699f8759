"""Funnel (Go ``tsnet.ListenFunnel``): public TLS connections brought to this node by an ingress
node over the tailnet (``access.py``: who may; ``listener.py``: the listener)."""

from pytsnet.funnel.access import check_funnel_access, funnel_ports_attr
from pytsnet.funnel.listener import FunnelListener, FunnelStream

__all__ = ["FunnelListener", "FunnelStream", "check_funnel_access", "funnel_ports_attr"]
