"""WireGuard (Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s) as a sans-IO core.

One module per concept, named as in wireguard-go and the whitepaper: ``constants``, ``kdf``,
``tai64n``, ``messages``, ``handshake``, ``cookie``, ``replay``, ``keypair``, ``timers`` and
``peer`` (the per-peer state machine that ties them together).
"""
