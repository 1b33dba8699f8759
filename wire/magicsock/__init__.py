"""magicsock's sans-IO cores: per-peer path selection (``endpoint``) and netcheck (``netcheck``).

Facts: ``docs/protocol/disco.md`` §4-§7 (Go ``wgengine/magicsock/endpoint.go``, ``net/netcheck``).
Nothing here reads a clock or touches a socket: callers pass ``now`` and carry out the returned actions.
"""
