"""``ServeListeners``: the tailnet listeners of served ports, the facade's side of ``ListenerTable``.

Each is an ordinary device listener (``Bindings``), so it follows the netstack across restarts and
rebuilds and an app's own listener on the port makes ``open`` fail (``AddressInUse``) instead of two
owners sharing a port. It lives as long as the device: a restarted ServeManager or port server finds
its listeners still open (pending connections keep waiting in the backlog).
"""

from __future__ import annotations

import threading

from pytsnet.net.bindings import Bindings
from pytsnet.net.stream import TcpListener

__all__ = ["ServeListeners"]


class ServeListeners:
    def __init__(self, bindings: Bindings) -> None:
        self._bindings = bindings
        self._lock = threading.Lock()
        self._open: dict[int, TcpListener] = {}

    def open(self, port: int) -> TcpListener:
        with self._lock:
            lst = self._open.get(port)
            if lst is None:
                lst = self._bindings.listen(port, None)
                self._open[port] = lst
            return lst

    def close(self, port: int) -> None:
        with self._lock:
            lst = self._open.pop(port, None)
        if lst is not None:
            lst.close()

    def ports(self) -> list[int]:
        with self._lock:
            return sorted(self._open)
