"""The capability version we speak (``tailcfg.CurrentCapabilityVersion``)."""

from typing import Final

CURRENT_CAPABILITY_VERSION: Final = 145
"""Sent as ``/key?v=``, the Noise protocol version and ``Version`` in Register/Map requests."""
