"""An embedded local tailnet: coordination server (this package), with hooks for DERP and STUN."""

from pytsnet.localnet.server import LocalTailnet

__all__ = ["LocalTailnet"]
