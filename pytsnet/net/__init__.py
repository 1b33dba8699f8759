"""App-facing networking over the userspace netstack: anyio streams and blocking socket twins."""

from pytsnet.actors.netstack.channel import FlowCrashed
from pytsnet.net.netstack import Netstack
from pytsnet.net.socket import SocketLike, SocketListener
from pytsnet.net.stream import TcpListener, TcpStream, UdpSocket

__all__ = ["FlowCrashed", "Netstack", "SocketLike", "SocketListener", "TcpListener", "TcpStream", "UdpSocket"]
