"""DERP (Designated Encrypted Relay for Packets), sans-IO.

``frames`` is the codec for every frame type, ``reader`` reassembles frames from a byte stream with a
bounded buffer, ``client_info`` seals/opens the NaCl-boxed ClientInfo/ServerInfo JSON, and
``handshake`` holds the client- and server-side connection state machines that the DERP client and
the local DERP server drive. Facts: ``docs/protocol/derp.md`` (Go ``derp/derp.go``).
"""
