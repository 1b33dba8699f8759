"""The peerAPI server: an HTTP/1.1 server for tailnet peers on our tailnet addresses (Go ``peerapi.go``)."""

from pytsnet.actors.peerapi.conn import PeerApiConnection
from pytsnet.actors.peerapi.server import Acceptor, PeerApiServer, peerapi_spec

__all__ = ["Acceptor", "PeerApiConnection", "PeerApiServer", "peerapi_spec"]
