"""``ServeListeners``: the tailnet listeners of served ports, the facade's side of ``ListenerTable``.

Each is an ordinary device listener (``Bindings``), so it follows the netstack across restarts and
rebuilds and an app's own listener on the port makes ``open`` fail (``AddressInUse``) instead of two
owners sharing a port. It lives as long as the device: a restarted ServeManager or port server finds
its listeners still open (pending connections keep waiting in the backlog). A service port
(``ServeConfig.Services``) is an acceptor of the device's ``ServiceHosting`` instead: its VIP SYNs.
"""

from __future__ import annotations

import threading

from pytsnet.net.bindings import Bindings
from pytsnet.net.stream import TcpListener
from pytsnet.services.hosting import ServiceHosting
from pytsnet.services.serving import ServiceAcceptor

__all__ = ["ServeListeners"]


class ServeListeners:
    def __init__(self, bindings: Bindings, services: ServiceHosting | None = None) -> None:
        self._bindings = bindings
        self._services = services
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

    def open_service(self, name: str, port: int) -> ServiceAcceptor:
        if self._services is None:
            raise OSError("this node hosts no services")
        return self._services.open_acceptor(name, port)

    def close_service(self, name: str, port: int) -> None:
        if self._services is not None:
            self._services.close_acceptor(name, port)

    def service_ports(self) -> list[tuple[str, int]]:
        return self._services.acceptor_ports() if self._services is not None else []
