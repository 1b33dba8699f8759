"""A bounded map from an address's wire form (an int, 16 packed bytes) to its shared ``ipaddress``
object: parsers build each address object once rather than per packet.

A plain dict whose ``__missing__`` builds the object, so a hit is one C-level lookup; when full it
starts over rather than growing (a scan from many sources must not cost unbounded memory).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

__all__ = ["AddressCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class AddressCache(dict[K, V]):
    __slots__ = ("_make", "_max")

    def __init__(self, make: Callable[[K], V], max_size: int = 1024) -> None:
        super().__init__()
        self._make = make
        self._max = max_size

    def __missing__(self, key: K) -> V:
        if len(self) >= self._max:
            self.clear()
        value = self[key] = self._make(key)
        return value
