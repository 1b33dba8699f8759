"""pytsnet's logging defaults, as a library should have them.

* ``pytsnet`` gets a ``NullHandler``: nothing is printed unless the app configures logging.
* Chatty dependencies (``pykka``, ``hpack``, ``h2``) start at WARNING, so an app that turns on DEBUG
  sees ``pytsnet.<subsystem>`` records rather than HPACK tables. Only a logger whose level is still
  unset (``NOTSET``) is touched: a level the app set, before or after, wins.

Records are per subsystem (``pytsnet.control``, ``.magicsock``, ``.wgengine``, ``.netstack``,
``.dataplane``, ``.runtime``, ``.device``); ``ActorDevice(logger=…)`` sends one device's records to
the app's logger instead (``pytsnet.actors.runtime.logs``). This module imports nothing else of
pytsnet, so ``import pytsnet`` stays light.
"""

from __future__ import annotations

import logging

__all__ = ["NOISY_LOGGERS", "install_defaults"]

NOISY_LOGGERS = ("pykka", "hpack", "h2")

_installed = False


def install_defaults() -> None:
    """Idempotent; called when pytsnet is imported."""
    global _installed
    if _installed:
        return
    _installed = True
    logging.getLogger("pytsnet").addHandler(logging.NullHandler())
    for name in NOISY_LOGGERS:
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET:
            lg.setLevel(logging.WARNING)
