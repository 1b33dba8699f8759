"""Supervised egress worker processes (issue 23): a SOCKS5/HTTP proxy front end whose flows run in
worker processes, each an ephemeral tailnet node, restarted on crash."""
