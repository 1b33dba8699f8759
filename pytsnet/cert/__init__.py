"""TLS with the node's own certificates (20a): the server ``SSLContext`` helper (``tls``) and the
TLS-terminating tailnet listener behind ``ActorDevice.listen_tls`` (``listener``)."""
