"""Netstack actors: the ``NetstackActor`` owning the sans-IO ``Stack``, one ``TcpFlowActor`` per flow."""
