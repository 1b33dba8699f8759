"""Tailscale SSH for an embedded node: ``dev.listen_ssh`` (:mod:`pytsnet.ssh.server`), its host key
(:mod:`pytsnet.ssh.hostkeys`) and the turnkey login shell (:mod:`pytsnet.ssh.shell`)."""

from pytsnet.ssh.server import SessionHandler, SSHListener, SSHPeer, SSHSession

__all__ = ["SSHListener", "SSHPeer", "SSHSession", "SessionHandler"]
