"""The NaCl-boxed ClientInfo and ServerInfo JSON of the DERP handshake.

Each box is ``crypto_box`` (X25519 + XSalsa20-Poly1305) from the sender's node private key to the
receiver's node public key, with a random 24-byte nonce in front (Go ``types/key/node.go``
``SealTo``/``OpenFrom``). A box that opens proves the sender holds the private half of the key it
claims — the server's only authentication of a client. JSON field names and ``omitempty`` rules
follow Go's ``derp.ClientInfo``/``derp.ServerInfo``; keys match case-insensitively, as Go's decoder.
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass
from typing import Any

from nacl.public import Box, PrivateKey, PublicKey

from pytsnet.wire.derp.errors import DerpCryptoError, DerpParseError
from pytsnet.wire.derp.frames import (
    MAX_INFO_LEN,
    NONCE_LEN,
    PROTOCOL_VERSION,
    ClientInfoFrame,
    ServerInfoFrame,
)
from pytsnet.wire.keys import NodePrivate, NodePublic

_MAC_LEN = 16  # Poly1305 tag
MAX_CLIENT_INFO_LEN = 256 << 10  # server refuses larger ClientInfo frames (derpserver.go recvClientKey)


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What a client tells the server about itself. ``mesh_key`` (32 raw bytes) only for mesh peers."""

    version: int = PROTOCOL_VERSION
    can_ack_pings: bool = True
    is_prober: bool = False
    app_name: str = ""
    mesh_key: bytes | None = None

    def to_json(self) -> bytes:
        d: dict[str, Any] = {}
        if self.mesh_key is not None and any(self.mesh_key):
            d["meshKey"] = self.mesh_key.hex()
        if self.version:
            d["version"] = self.version
        d["CanAckPings"] = self.can_ack_pings
        if self.is_prober:
            d["IsProber"] = True
        if self.app_name:
            d["AppName"] = self.app_name
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, b: bytes) -> ClientInfo:
        d = _load_object(b)
        mesh = d.get("meshkey")
        mesh_key = None
        if mesh is not None:
            if not isinstance(mesh, str) or len(mesh) != 64:
                raise DerpParseError("ClientInfo meshKey must be 64 hex digits")
            try:
                mesh_key = bytes.fromhex(mesh)
            except ValueError as e:
                raise DerpParseError("ClientInfo meshKey is not hex") from e
            if len(mesh_key) != 32:
                raise DerpParseError("ClientInfo meshKey is not hex")
        return cls(
            version=_int(d, "version"),
            can_ack_pings=_bool(d, "canackpings"),
            is_prober=_bool(d, "isprober"),
            app_name=_str(d, "appname"),
            mesh_key=mesh_key,
        )

    def mesh_key_matches(self, server_mesh_key: bytes | None) -> bool:
        """Constant-time mesh-key check (Go ``isMeshPeer``); never true without a server mesh key."""
        if not server_mesh_key or self.mesh_key is None:
            return False
        return hmac.compare_digest(self.mesh_key, server_mesh_key)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the server tells the client; a non-zero token bucket asks the client to rate-limit."""

    version: int = PROTOCOL_VERSION
    token_bucket_bytes_per_second: int = 0
    token_bucket_bytes_burst: int = 0

    def to_json(self) -> bytes:
        d: dict[str, Any] = {}
        if self.version:
            d["version"] = self.version
        if self.token_bucket_bytes_per_second:
            d["TokenBucketBytesPerSecond"] = self.token_bucket_bytes_per_second
        if self.token_bucket_bytes_burst:
            d["TokenBucketBytesBurst"] = self.token_bucket_bytes_burst
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, b: bytes) -> ServerInfo:
        d = _load_object(b)
        return cls(
            version=_int(d, "version"),
            token_bucket_bytes_per_second=_int(d, "tokenbucketbytespersecond"),
            token_bucket_bytes_burst=_int(d, "tokenbucketbytesburst"),
        )


def _load_object(b: bytes) -> dict[str, Any]:
    try:
        d = json.loads(b)
    except (ValueError, RecursionError) as e:  # RecursionError: absurd nesting from an untrusted peer
        raise DerpParseError(f"info JSON does not parse: {type(e).__name__}") from None
    if not isinstance(d, dict):
        raise DerpParseError("info JSON is not an object")
    out: dict[str, Any] = {}
    for k, v in d.items():  # Go matches field names case-insensitively; the last match wins
        if v is not None:
            out[k.lower()] = v
    return out


def _int(d: dict[str, Any], k: str) -> int:
    v = d.get(k, 0)
    if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
        raise DerpParseError(f"info JSON field {k} must be an int")
    return v


def _bool(d: dict[str, Any], k: str) -> bool:
    v = d.get(k, False)
    if not isinstance(v, bool):
        raise DerpParseError(f"info JSON field {k} must be a bool")
    return v


def _str(d: dict[str, Any], k: str) -> str:
    v = d.get(k, "")
    if not isinstance(v, str):
        raise DerpParseError(f"info JSON field {k} must be a string")
    return v


def _box(private: NodePrivate, public: NodePublic) -> Box:
    try:
        return Box(PrivateKey(private.raw), PublicKey(public.raw))
    except Exception as e:  # libsodium refuses low-order public keys
        raise DerpCryptoError("cannot derive a box key with this peer key") from e


def seal(private: NodePrivate, peer: NodePublic, plaintext: bytes, nonce: bytes | None = None) -> bytes:
    """``nonce ‖ crypto_box(plaintext)`` from ``private`` to ``peer`` (Go ``NodePrivate.SealTo``)."""
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    return bytes(_box(private, peer).encrypt(plaintext, nonce))


def open_from(private: NodePrivate, peer: NodePublic, sealed: bytes) -> bytes:
    """Open a box sealed by ``peer`` to ``private``; ``DerpCryptoError`` unless it authenticates."""
    if len(sealed) < NONCE_LEN + _MAC_LEN:
        raise DerpCryptoError("box too short to open")
    try:
        return bytes(_box(private, peer).decrypt(sealed))
    except DerpCryptoError:
        raise
    except Exception as e:  # nacl.exceptions.CryptoError
        raise DerpCryptoError("box did not open: wrong key or tampered bytes") from e


def seal_client_info(
    client: NodePrivate, server: NodePublic, info: ClientInfo, nonce: bytes | None = None
) -> ClientInfoFrame:
    """The ClientInfo frame a client sends after learning ``server`` from ServerKey."""
    return ClientInfoFrame(client.public(), seal(client, server, info.to_json(), nonce))


def open_client_info(server: NodePrivate, frame: ClientInfoFrame) -> ClientInfo:
    """Authenticate ``frame.client_key`` and decode its ClientInfo (server side)."""
    if len(frame.sealed) > MAX_CLIENT_INFO_LEN:
        raise DerpParseError("long client info")
    return ClientInfo.from_json(open_from(server, frame.client_key, frame.sealed))


def seal_server_info(
    server: NodePrivate, client: NodePublic, info: ServerInfo, nonce: bytes | None = None
) -> ServerInfoFrame:
    return ServerInfoFrame(seal(server, client, info.to_json(), nonce))


def open_server_info(client: NodePrivate, server: NodePublic, frame: ServerInfoFrame) -> ServerInfo:
    """Decode the ServerInfo the server sealed to this client (client side)."""
    if len(frame.sealed) > MAX_INFO_LEN:
        raise DerpParseError("ServerInfo exceeds MaxInfoLen")
    return ServerInfo.from_json(open_from(client, server, frame.sealed))
