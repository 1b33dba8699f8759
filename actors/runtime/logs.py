"""Per-device log routing: ``pytsnet.<subsystem>`` records find the device that made them.

Go's tsnet gives each ``Server`` its own ``UserLogf``/``Logf``; Python code logs through module-level
loggers, which know nothing of devices. So each thread running a device's code (actor handlers and
hooks, io loops, the control connection's reader) carries that device's ``LogRoute`` in a
thread-local, set by the runtime around actor code (``enter``/``leave``). ``subsystem_logger(name)``
is what modules use instead of ``logging.getLogger``: an adapter that sends each record to the
current route (the device's own logger, when the app gave one) or else to
``logging.getLogger("pytsnet.<name>")``, tagged with the device (``record.pytsnet_device``) and the
subsystem (``record.pytsnet_subsystem``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

__all__ = ["LogRoute", "SubsystemLogger", "current", "enter", "leave", "scope", "subsystem_logger"]

AnyLogger = logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]


class _Scope(threading.local):
    route: LogRoute | None = None


_scope = _Scope()


class LogRoute:
    """Where one device's records go: ``logger`` (any Logger or LoggerAdapter) or, when None, the
    standard ``pytsnet.<subsystem>`` loggers."""

    def __init__(self, device: str, logger: AnyLogger | None = None) -> None:
        self.device = device
        self.logger = logger

    def emit(self, subsystem: str, level: int, msg: object, args: tuple[Any, ...],
             kwargs: MutableMapping[str, Any]) -> None:
        """Log one record for ``subsystem`` (the caller is ``stacklevel`` frames up, not counting
        logging's own frames)."""
        target = self.target(subsystem)
        if not target.isEnabledFor(level):
            return
        extra = dict(kwargs.pop("extra", None) or {})
        extra.setdefault("pytsnet_device", self.device)
        extra.setdefault("pytsnet_subsystem", subsystem)
        if self.logger is not None:
            msg = f"{subsystem}: {msg}"
        kwargs["extra"] = extra
        while isinstance(target, logging.LoggerAdapter):  # keep the app adapter's extra and ours
            ours = kwargs["extra"]
            msg, kwargs = target.process(msg, kwargs)
            kwargs["extra"] = {**ours, **(kwargs.get("extra") or {})}
            target = target.logger
        target.log(level, msg, *args, **kwargs)

    def target(self, subsystem: str) -> AnyLogger:
        return self.logger if self.logger is not None else logging.getLogger(f"pytsnet.{subsystem}")


def current() -> LogRoute | None:
    """The route of the device whose code this thread is running, if any."""
    return _scope.route


def enter(route: LogRoute | None) -> LogRoute | None:
    """Make ``route`` this thread's route; returns the previous one for ``leave``."""
    prev = _scope.route
    _scope.route = route
    return prev


def leave(prev: LogRoute | None) -> None:
    _scope.route = prev


@contextlib.contextmanager
def scope(route: LogRoute | None) -> Iterator[None]:
    """``route`` for the duration (the facade uses it on the app's thread)."""
    prev = enter(route)
    try:
        yield
    finally:
        leave(prev)


class SubsystemLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``pytsnet.<subsystem>``, routed per device (see the module docstring)."""

    def __init__(self, subsystem: str) -> None:
        super().__init__(logging.getLogger(f"pytsnet.{subsystem}"), {})
        self.subsystem = subsystem

    def isEnabledFor(self, level: int) -> bool:
        route = _scope.route
        return (self.logger if route is None else route.target(self.subsystem)).isEnabledFor(level)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        # Two frames of ours (this one and LogRoute.emit) sit between the caller and logging.
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 2
        route = _scope.route
        if route is None:
            route = _DEFAULT
        route.emit(self.subsystem, level, msg, args, kwargs)


_DEFAULT = LogRoute("")

_loggers: dict[str, SubsystemLogger] = {}
_lock = threading.Lock()


def subsystem_logger(subsystem: str) -> SubsystemLogger:
    """The routed logger of ``subsystem`` (``control``, ``magicsock``, ``wgengine``, ``netstack``, …)."""
    with _lock:
        lg = _loggers.get(subsystem)
        if lg is None:
            lg = _loggers[subsystem] = SubsystemLogger(subsystem)
        return lg
