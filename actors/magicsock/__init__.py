"""The data plane's path half (Go magicsock) as supervised actors.

``udp`` owns the one UDP socket, demultiplexes reads (WireGuard → W, disco → DiscoPinger, STUN →
StunProber) and routes ``WgDatagramOut`` by each peer's current path; ``derp_client`` keeps one DERP
connection per region; ``disco`` drives the per-peer path cores; ``stun`` runs netcheck. ``node``
spawns the set under one supervisor.
"""
