"""The SSH host key: generated once per node and kept in its state store, so clients see one key.

Go's tailssh keeps host keys under the state directory (``ssh/ssh_host_*_key``); here they live in the
node's own state store (``FileStore``: the ``tailscaled.state`` file, 0600) under :data:`HOST_KEY_STATE`,
so an in-memory node's key lives and dies with it, like the rest of its identity. One Ed25519 key:
every current OpenSSH client accepts it.
"""

from __future__ import annotations

from typing import Protocol

import asyncssh

__all__ = ["HOST_KEY_STATE", "load_or_create_host_key"]

HOST_KEY_STATE = "_ssh-host-key-ed25519"
"""State-store key of the OpenSSH-format private host key."""


class _Store(Protocol):
    def read_state(self, key: str) -> bytes | None: ...
    def write_state(self, key: str, value: bytes) -> None: ...


def load_or_create_host_key(store: _Store) -> asyncssh.SSHKey:
    """The node's host key, made and stored on first use. A stored key that does not parse is an
    error (``asyncssh.KeyImportError``), never silently replaced: clients pinned the old one."""
    blob = store.read_state(HOST_KEY_STATE)
    if blob is not None:
        return asyncssh.import_private_key(blob)
    key = asyncssh.generate_private_key("ssh-ed25519")
    store.write_state(HOST_KEY_STATE, key.export_private_key("openssh"))
    return key
