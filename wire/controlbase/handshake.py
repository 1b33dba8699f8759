"""Noise IK handshake for ts2021 (control/controlbase/handshake.go): client initiator, server responder.

Keys in are ``pytsnet.wire.keys`` objects (``MachinePrivate``/``MachinePublic``) or raw 32-byte values;
the peer's key comes out as a ``MachinePublic``.
The client's initiation rides in the HTTP upgrade request, so the client side is split in two: build
the initiation, later feed the response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from pytsnet.wire.controlbase.conn import Conn
from pytsnet.wire.controlbase.constants import KEY_LEN
from pytsnet.wire.controlbase.errors import ControlProtocolError
from pytsnet.wire.controlbase.messages import InitiationMessage, ResponseMessage
from pytsnet.wire.controlbase.symmetric import SymmetricState, protocol_version_prologue
from pytsnet.wire.keys import MachinePublic


class _HasRaw(Protocol):
    @property
    def raw(self) -> bytes: ...


KeyLike = bytes | _HasRaw


def _raw(key: KeyLike) -> bytes:
    raw = key if isinstance(key, bytes | bytearray) else key.raw
    if len(raw) != KEY_LEN:
        raise ValueError("Curve25519 keys are 32 bytes")
    return bytes(raw)


def _public_of(private: bytes) -> bytes:
    public = X25519PrivateKey.from_private_bytes(private).public_key()
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _new_private() -> bytes:
    return X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


class ClientHandshake:
    """Initiator. ``initiation`` is ready at construction; ``receive_response`` yields the ``Conn``.

    ``ephemeral_private`` is for tests only (deterministic transcripts).
    """

    def __init__(self, machine_private: KeyLike, control_public: KeyLike, protocol_version: int, *,
                 ephemeral_private: KeyLike | None = None) -> None:
        if not 0 <= protocol_version <= 0xFFFF:
            raise ValueError("protocol version must fit in a uint16")
        self._machine = _raw(machine_private)
        self._control = _raw(control_public)
        self._ephemeral = _raw(ephemeral_private) if ephemeral_private is not None else _new_private()
        self.protocol_version = protocol_version
        self._done = False

        s = self._s = SymmetricState()
        s.mix_hash(protocol_version_prologue(protocol_version))
        s.mix_hash(self._control)  # <- s
        e_pub = _public_of(self._ephemeral)  # -> e, es, s, ss
        s.mix_hash(e_pub)
        enc_machine = s.encrypt_and_hash(s.mix_dh(self._ephemeral, self._control), _public_of(self._machine))
        tag = s.encrypt_and_hash(s.mix_dh(self._machine, self._control), b"")
        self.initiation: bytes = InitiationMessage(protocol_version, e_pub, enc_machine, tag).encode()
        """The 101-byte message to send (base64 in ``X-Tailscale-Handshake``)."""

    def receive_response(self, data: bytes) -> Conn:
        """Finish with the server's 51-byte response; raises a typed error on anything else.

        An error message (type 0x03) should be detected first with ``ClientStream``, which reports it
        as ``ServerErrorMessage``; here it is simply a parse error.
        """
        if self._done:
            raise ControlProtocolError("handshake already finished")
        self._done = True
        resp = ResponseMessage.parse(data)
        s = self._s
        s.mix_hash(resp.ephemeral_pub)  # <- e, ee, se
        s.mix_dh(self._ephemeral, resp.ephemeral_pub)
        s.decrypt_and_hash(s.mix_dh(self._machine, resp.ephemeral_pub), resp.tag)
        k1, k2 = s.split()
        return Conn(send_key=k1, receive_key=k2, protocol_version=self.protocol_version,
                    peer=MachinePublic.from_raw(self._control), handshake_hash=s.h)


@dataclass(frozen=True)
class Accepted:
    """A server-side handshake that succeeded: write ``response``, then use ``conn``."""

    response: bytes
    """The 51-byte response; send it before any record (ideally in the same write)."""
    conn: Conn
    machine_public: MachinePublic
    """The client's machine key, authenticated by the handshake."""
    protocol_version: int
    """The client's advertised protocol version (= its capability version for Go clients)."""


def accept_initiation(initiation: bytes, control_private: KeyLike, *,
                      ephemeral_private: KeyLike | None = None) -> Accepted:
    """Run the responder side on one 101-byte initiation.

    Raises ``ControlParseError`` for a malformed message (send ``encode_error_message(str(err))``
    back, as Go does) and ``ControlCryptoError`` when it does not authenticate (just close).
    Versions are not judged here; the caller decides based on ``protocol_version``.
    """
    init = InitiationMessage.parse(initiation)
    control = _raw(control_private)
    ephemeral = _raw(ephemeral_private) if ephemeral_private is not None else _new_private()

    s = SymmetricState()
    s.mix_hash(protocol_version_prologue(init.version))
    s.mix_hash(_public_of(control))
    s.mix_hash(init.ephemeral_pub)
    machine_pub = s.decrypt_and_hash(s.mix_dh(control, init.ephemeral_pub), init.machine_pub_ciphertext)
    s.decrypt_and_hash(s.mix_dh(control, machine_pub), init.tag)

    e_pub = _public_of(ephemeral)
    s.mix_hash(e_pub)
    s.mix_dh(ephemeral, init.ephemeral_pub)
    tag = s.encrypt_and_hash(s.mix_dh(ephemeral, machine_pub), b"")
    k1, k2 = s.split()
    peer = MachinePublic.from_raw(machine_pub)
    conn = Conn(send_key=k2, receive_key=k1, protocol_version=init.version, peer=peer, handshake_hash=s.h)
    return Accepted(response=ResponseMessage(e_pub, tag).encode(), conn=conn, machine_public=peer,
                    protocol_version=init.version)
