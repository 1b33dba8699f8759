"""``ServiceAcceptor``: a service VIP port served by Serve (``ServeConfig.Services``), fed by the netstack.

Go hands a flow to a VIP port to ``tcpHandlerForVIPService`` when the serve config has a TCP handler
for that service port. Here the dispatcher of VIP SYNs (``pytsnet.services.fallback``) asks the
device's ``ServiceHosting`` for the port's target; while Serve serves the port that target is this
acceptor, whose ``accept_blocking`` is the Serve port server's accept loop (as a node port's tailnet
listener). Bounded as a listener's backlog (full or closed: the SYN is reset).
"""

from __future__ import annotations

import collections
import threading
import time

from pytsnet.actors.netstack.channel import FlowChannel

__all__ = ["ServiceAcceptor"]


class ServiceAcceptor:
    def __init__(self, name: str, port: int, backlog: int = 128) -> None:
        self.name = name
        self.port = port
        self.backlog = backlog
        self._cond = threading.Condition()
        self._ready: collections.deque[FlowChannel] = collections.deque()
        self._closed = False

    def wants(self) -> bool:
        with self._cond:
            return not self._closed and len(self._ready) < self.backlog

    def take(self, ch: FlowChannel) -> bool:
        """The dispatcher's hand-over of an established flow; False (the caller closes it) when full
        or closed."""
        with self._cond:
            if self._closed or len(self._ready) >= self.backlog:
                return False
            self._ready.append(ch)
            self._cond.notify()
            return True

    def accept_blocking(self, timeout: float | None = None) -> FlowChannel:
        """The next flow; ``TimeoutError`` after ``timeout``, ``OSError`` once closed."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                if self._closed:
                    raise OSError("service acceptor closed")
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("accept timed out")
                self._cond.wait(left)
            return self._ready.popleft()

    def close(self) -> None:
        """Flows not yet taken by Serve are closed."""
        with self._cond:
            self._closed = True
            pending = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        for ch in pending:
            ch.close()
