"""Serve (Go ``ipn/ipnlocal/serve.go``): the manager, the per-port servers and per-connection actors."""

from pytsnet.actors.serve.conn import ServeConnection
from pytsnet.actors.serve.server import ListenerTable, ServeManager, ServePort, serve_spec

__all__ = ["ListenerTable", "ServeConnection", "ServeManager", "ServePort", "serve_spec"]
