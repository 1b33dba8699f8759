"""Tailnet Lock on the node: the chain's on-disk store and the TKA authority actor."""
