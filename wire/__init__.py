"""Sans-IO codecs and protocol state machines: bytes and ``now`` in, bytes and events out."""
