"""Tailscale key types: machine, node and disco Curve25519 keys, and the tailnet-lock Ed25519 key.

Each key kind is its own type so a node key can never be passed where a disco key is expected.
Text forms match Go's ``types/key`` (prefix + lowercase hex; either case accepted on parse).
Private keys never show their bytes in ``repr``/``str``; public keys compare in constant time.
"""

from __future__ import annotations

import base64
import hmac
import os
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # NLPrivate (21a)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # NLPrivate (21a)
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base

from pytsnet.wire.errors import CryptoError, ParseError

KEY_LEN = 32
_ZERO = bytes(KEY_LEN)


class KeyParseError(ParseError):
    """A key's text or raw form is malformed (wrong prefix, length or hex)."""


def _parse_hex(text: str, prefix: str, accepted: tuple[str, ...] = ()) -> bytes:
    if not isinstance(text, str):
        raise KeyParseError(f"key text must be str, got {type(text).__name__}")
    for p in (prefix, *accepted):
        if text.startswith(p):
            body = text[len(p) :]
            break
    else:
        raise KeyParseError(f"key text lacks prefix {prefix!r}")
    if len(body) != 2 * KEY_LEN:
        raise KeyParseError(f"key hex must be {2 * KEY_LEN} characters, got {len(body)}")
    try:
        raw = bytes.fromhex(body)
    except ValueError as e:
        raise KeyParseError("key text is not hex") from e
    if len(raw) != KEY_LEN:  # fromhex skips whitespace, so check the decoded length too
        raise KeyParseError("key text is not hex")
    return raw


def _check_raw(b: bytes) -> bytes:
    if not isinstance(b, bytes | bytearray | memoryview):
        raise KeyParseError(f"raw key must be bytes, got {type(b).__name__}")
    b = bytes(b)
    if len(b) != KEY_LEN:
        raise KeyParseError(f"raw key must be {KEY_LEN} bytes, got {len(b)}")
    return b


PubT = TypeVar("PubT", bound="_Public")


class _Key32:
    """32 immutable key bytes with a text form ``PREFIX + hex``; shared by public and private keys."""

    PREFIX: ClassVar[str] = ""
    ACCEPTED_PREFIXES: ClassVar[tuple[str, ...]] = ()
    __slots__ = ("_raw",)
    _raw: bytes

    def __init__(self, raw: bytes) -> None:
        object.__setattr__(self, "_raw", _check_raw(raw))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    @classmethod
    def from_raw(cls, b: bytes) -> Self:
        return cls(b)

    @classmethod
    def from_text(cls, s: str) -> Self:
        return cls(_parse_hex(s, cls.PREFIX, cls.ACCEPTED_PREFIXES))

    @property
    def raw(self) -> bytes:
        return self._raw

    def to_text(self) -> str:
        return self.PREFIX + self._raw.hex()

    def is_zero(self) -> bool:
        return hmac.compare_digest(self._raw, _ZERO)


class _Public(_Key32):
    """A 32-byte public key: frozen, hashable, constant-time equality."""

    __slots__ = ()

    @classmethod
    def zero(cls) -> Self:
        return cls(_ZERO)


    def short_string(self) -> str:
        """Go's debug form: ``[`` + first 5 base64 characters + ``]``; empty for the zero key."""
        if self.is_zero():
            return ""
        return "[" + base64.b64encode(self._raw).decode()[:5] + "]"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Public)
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._raw))

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_text()!r})"

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        return (type(self), (self._raw,))


class MachinePublic(_Public):
    """The machine key: identifies the host to the control server (ts2021 Noise static)."""

    PREFIX = "mkey:"


class NodePublic(_Public):
    """The node key: the WireGuard static key and the DERP identity."""

    PREFIX = "nodekey:"


class DiscoPublic(_Public):
    """The disco key: authenticates path-discovery messages between peers."""

    PREFIX = "discokey:"


class NLPublic(_Public):
    """The tailnet-lock Ed25519 public key; the CLI shows ``tlpub:`` and Go accepts both."""

    PREFIX = "nlpub:"
    ACCEPTED_PREFIXES = ("tlpub:",)

    CLI_PREFIX: ClassVar[str] = "tlpub:"

    def cli_string(self) -> str:
        """Go's NLPublic.CLIString: ``tlpub:`` + hex, the form ``tailscale lock`` prints and takes."""
        return self.CLI_PREFIX + self._raw.hex()



class _Private(_Key32, Generic[PubT]):
    """A Curve25519 private scalar. Its bytes appear only through ``.raw`` and ``.to_text()``."""

    PREFIX: ClassVar[str] = "privkey:"
    PUBLIC: type[PubT]  # set per subclass; public() returns that kind of public key
    __slots__ = ("_pub",)
    _pub: PubT | None

    def __init__(self, raw: bytes) -> None:
        super().__init__(raw)
        object.__setattr__(self, "_pub", None)

    @classmethod
    def generate(cls) -> Self:
        """A fresh random key, clamped as Go's ``key.NewNode`` does."""
        b = bytearray(os.urandom(KEY_LEN))
        b[0] &= 248
        b[31] = (b[31] & 127) | 64
        return cls(bytes(b))


    def public(self) -> PubT:
        """The matching public key (computed once)."""
        if self._pub is None:
            object.__setattr__(self, "_pub", self.PUBLIC(crypto_scalarmult_base(self._raw)))
        assert self._pub is not None
        return self._pub

    def shared_secret(self, peer: _Public) -> bytes:
        """X25519 with ``peer``; an all-zero result (low-order point) is a ``CryptoError``."""
        try:
            out = crypto_scalarmult(self._raw, peer.raw)
        except Exception as e:  # nacl raises RuntimeError on an all-zero result
            raise CryptoError("X25519 produced no shared secret (low-order public key)") from e
        if hmac.compare_digest(out, _ZERO):
            raise CryptoError("X25519 produced an all-zero shared secret")
        return out

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Private)
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<private>)"

    __str__ = __repr__


class MachinePrivate(_Private[MachinePublic]):
    PUBLIC = MachinePublic


class NodePrivate(_Private[NodePublic]):
    PUBLIC = NodePublic


class DiscoPrivate(_Private[DiscoPublic]):
    PUBLIC = DiscoPublic


PrivT = TypeVar("PrivT", bound=_Private[Any])


NL_PRIVATE_PREFIX = "nlpriv:"
NL_PRIVATE_LEN = 64


class NLPrivate:
    """The tailnet-lock Ed25519 private key, as Go's ``key.NLPrivate``: 64 bytes (seed || public).

    Text form ``nlpriv:`` + 128 hex digits (Go's MarshalText). Unlike Go, parsing checks that the
    public half matches the seed: a mismatched half is refused rather than carried into signing.
    The bytes show only through ``.raw`` and ``.to_text()``, never ``repr``/``str``.
    """

    __slots__ = ("_pub", "_raw", "_signer")
    _raw: bytes
    _pub: NLPublic
    _signer: Ed25519PrivateKey

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise KeyParseError(f"raw key must be bytes, got {type(raw).__name__}")
        raw = bytes(raw)
        if len(raw) != NL_PRIVATE_LEN:
            raise KeyParseError(f"NL private key must be {NL_PRIVATE_LEN} bytes, got {len(raw)}")
        signer = Ed25519PrivateKey.from_private_bytes(raw[:32])
        pub = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        if not hmac.compare_digest(pub, raw[32:]):
            raise KeyParseError("NL private key's public half does not match its seed")
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "_pub", NLPublic(pub))
        object.__setattr__(self, "_signer", signer)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("NLPrivate is immutable")

    @classmethod
    def generate(cls) -> NLPrivate:
        """A fresh random key (Go's key.NewNLPrivate)."""
        return cls.from_ed25519(os.urandom(32))

    @classmethod
    def from_ed25519(cls, b: bytes) -> NLPrivate:
        """From a 32-byte Ed25519 seed or Go's 64-byte ``ed25519.PrivateKey``."""
        b = bytes(b)
        if len(b) == 32:
            pub = Ed25519PrivateKey.from_private_bytes(b).public_key()
            return cls(b + pub.public_bytes(Encoding.Raw, PublicFormat.Raw))
        return cls(b)

    @classmethod
    def from_text(cls, s: str) -> NLPrivate:
        if not isinstance(s, str) or not s.startswith(NL_PRIVATE_PREFIX):
            raise KeyParseError(f"key text lacks prefix {NL_PRIVATE_PREFIX!r}")
        body = s[len(NL_PRIVATE_PREFIX) :]
        if len(body) != 2 * NL_PRIVATE_LEN:
            raise KeyParseError(f"key hex must be {2 * NL_PRIVATE_LEN} characters")
        try:
            raw = bytes.fromhex(body)
        except ValueError as e:
            raise KeyParseError("key text is not hex") from e
        return cls(raw)

    def to_text(self) -> str:
        return NL_PRIVATE_PREFIX + self._raw.hex()

    @property
    def raw(self) -> bytes:
        """Go's 64-byte form (seed || public)."""
        return self._raw

    def public(self) -> NLPublic:
        return self._pub

    def key_id(self) -> bytes:
        """The TKA KeyID of this key: its 32 public bytes."""
        return self._pub.raw

    def sign(self, msg: bytes) -> bytes:
        """An Ed25519 signature over ``msg`` (deterministic, as Go's ``ed25519.Sign``)."""
        return self._signer.sign(bytes(msg))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NLPrivate):
            return NotImplemented
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(("NLPrivate", self._raw))

    def __repr__(self) -> str:
        return "NLPrivate(<private>)"

    __str__ = __repr__




def save_private(path: str | os.PathLike[str], key: _Private[Any]) -> None:
    """Write ``key``'s text form to ``path`` with mode 0600 (created that way, never world-readable)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key.to_text().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)


def load_private(path: str | os.PathLike[str], cls: type[PrivT]) -> PrivT:
    """Read a key written by ``save_private``; malformed content raises ``KeyParseError``."""
    data = Path(path).read_bytes()
    if len(data) > 256:
        raise KeyParseError("private key file too large")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError as e:
        raise KeyParseError("private key file is not ASCII") from e
    return cls.from_text(text)
