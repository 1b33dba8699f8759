"""The peer table actor (PeerTracker) and its admission rule."""

from pytsnet.actors.peers.tracker import PeerTracker, admit

__all__ = ["PeerTracker", "admit"]
