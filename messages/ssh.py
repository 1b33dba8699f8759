"""Messages of Tailscale SSH check mode (22d): the node's SSH server asks the ControlRunner to fetch
the next ``tailcfg.SSHAction`` from a ``holdAndDelegate`` URL over the Noise connection to control.

Go (``ssh/tailssh`` ``fetchSSHAction``) sends ``GET <url>`` through ``LocalBackend.DoNoiseRequest``; the
URL is the one control put in the policy, expanded. The runner refuses a URL that names another host
than control (fail closed: the node never fetches an SSH decision from anywhere else).
"""

from __future__ import annotations

from pytsnet.messages.base import Message, Request

__all__ = ["IoSshActionAnswer", "SshActionAnswer", "SshActionCancel", "SshActionFetch"]


class SshActionAnswer(Message, tag="ssh.action_answer"):
    """Control's answer to an ``SshActionFetch`` as it came (HTTP ``status``, ``body``: an ``SSHAction``
    JSON when 200), or ``error`` when none: ``status`` 400 for a refused URL, 503 "no netmap" when no
    session is up, 0 when the connection failed or the wait ran out."""

    status: int = 0
    body: bytes = b""
    error: str = ""


class SshActionFetch(Request[SshActionAnswer], tag="ssh.action_fetch"):
    """``GET url`` over the current Noise connection, answered when control answers (control may hold
    the request while a check is pending), at the latest after ``timeout`` seconds."""

    url: str
    """The expanded ``holdAndDelegate`` URL (``https://unused/machine/...`` or control's own host)."""
    timeout: float = 1800.0
    """Go bounds the whole fetch by 30 minutes."""
    fetch_id: str = ""
    """The caller's name for this fetch, for ``SshActionCancel`` ("" : not cancellable)."""


class SshActionCancel(Message, tag="ssh.action_cancel"):
    """The SSH client gave up while its check was pending: the fetch ``fetch_id`` is answered
    "cancelled" and its stream reset, so control drops the pending check."""

    fetch_id: str


class IoSshActionAnswer(Message, tag="ssh.io_action_answer"):
    """The ControlRunner's I/O thread to itself: SSH action fetch ``token`` got ``status``/``body``."""

    token: int
    status: int = 0
    body: bytes = b""
    error: str = ""
