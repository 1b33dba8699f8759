"""Taildrop's sans-IO rules (Go ``feature/taildrop``): file names, partial files, resume hashes.

A peer sends a file with ``PUT /v0/put/<name>`` on our peerAPI; the bytes land in
``<name>.<peer stable ID>.partial`` and are renamed to ``<name>`` once complete (an existing
``<name>`` with other contents makes it ``<name> (1)``, Go's ``nextFilename``). A cut transfer leaves
the partial file, so the sender can resume: ``GET /v0/put/<name>`` streams one JSON
``{"checksum": hex, "algo": "sha256", "size": n}`` line per 64 KiB block of that partial file, the
sender compares them with its own blocks (``ResumeMatcher``, Go ``resumeReader``) and sends the rest
with ``Range: bytes=<offset>-`` (the receiver truncates the partial file there). Names are checked
as Go's ``validateBaseName`` does, plus Windows' reserved device names everywhere (Go refuses those
on Windows only; a name that is a device there is refused here too, so no file we accept is unusable
or dangerous once copied to a Windows machine).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote

from pytsnet.wire.errors import ParseError

__all__ = ["BLOCK_SIZE", "DELETED_SUFFIX", "HASH_ALGORITHM", "PARTIAL_SUFFIX", "PUT_PATH",
           "BadBlockChecksum", "BlockChecksum", "InvalidFileName", "ResumeMatcher", "block_checksums",
           "name_of_target", "next_filename", "parse_range", "partial_name", "put_target",
           "validate_base_name"]

PUT_PATH = "/v0/put/"
PARTIAL_SUFFIX = ".partial"
DELETED_SUFFIX = ".deleted"
BLOCK_SIZE = 64 << 10
"""Go's ``blockSize``: the resume hashes cover the partial file in blocks of this size."""
HASH_ALGORITHM = "sha256"
MAX_NAME_BYTES = 255

_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
                     *(f"{p}{i}" for p in ("COM", "LPT") for i in (*"123456789", "¹", "²", "³"))}
_BAD_RUNES = set('/\\:*"<>|')


class InvalidFileName(ParseError):
    """Go's ``ErrInvalidFileName``: the name could be a path, a reserved or partial name, or unprintable."""

    def __init__(self, why: str = "") -> None:
        super().__init__("invalid filename" + (f": {why}" if why else ""))
        self.why = why


class BadBlockChecksum(ParseError):
    """A resume hash line that is not Go's ``blockChecksum`` (the sender then sends the whole file)."""


def _graphic(c: str) -> bool:
    """Go ``unicode.IsGraphic``: letters, marks, numbers, punctuation, symbols and ASCII-space-like Zs."""
    cat = unicodedata.category(c)
    return cat[0] in "LMNPS" or cat == "Zs"


def validate_base_name(name: str) -> None:
    """Go ``validateBaseName`` (+ Windows' reserved names): ``InvalidFileName`` unless ``name`` is one
    plain file name — no path, no ``.``/``..``, no ``.partial``/``.deleted`` suffix, no leading or
    trailing space, at most 255 UTF-8 bytes, printable, none of ``/\\:*"<>|``."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (undecodable bytes): Go's !utf8.ValidString
        raise InvalidFileName("not UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidFileName(f"longer than {MAX_NAME_BYTES} bytes")
    if not name or name in (".", ".."):
        raise InvalidFileName("empty, . or ..")
    if name.strip() != name:
        raise InvalidFileName("leading or trailing space")
    if name.endswith((PARTIAL_SUFFIX, DELETED_SUFFIX)):
        raise InvalidFileName("a .partial or .deleted name")
    for c in name:
        if c in _BAD_RUNES or not _graphic(c):
            raise InvalidFileName(f"character U+{ord(c):04X}")
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in _WINDOWS_RESERVED:
        raise InvalidFileName("a reserved device name")


def partial_name(base: str, client_id: str) -> str:
    """Go ``clientID.partialSuffix``: ``foo.n12345CNTRL.partial`` (``foo.partial`` without an ID)."""
    return f"{base}.{client_id}{PARTIAL_SUFFIX}" if client_id else base + PARTIAL_SUFFIX


def put_target(name: str) -> str:
    """The request target for ``name``: ``/v0/put/`` + the name path-escaped (Go ``url.PathEscape``)."""
    return PUT_PATH + quote(name, safe="")


def name_of_target(raw_path: str) -> str:
    """The file name a ``/v0/put/...`` path carries (Go ``PathUnescape`` of the escaped path), not yet
    validated; ``InvalidFileName`` when it cannot be decoded."""
    escaped = raw_path[len(PUT_PATH):]
    if re.search(r"%(?![0-9A-Fa-f]{2})", escaped):
        raise InvalidFileName("bad escape")
    try:
        return unquote(escaped, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidFileName("not UTF-8") from None


_RANGE = re.compile(r"bytes=(\d{1,19})-")


def parse_range(header: str) -> int | None:
    """The offset of Go's one accepted ``Range`` form, ``bytes=N-`` (``httphdr.ParseRange`` with one
    range of length 0); None for anything else (Go's 400 ``invalid Range header``)."""
    m = _RANGE.fullmatch(header.strip())
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class BlockChecksum:
    """Go ``blockChecksum``: one block of a partial file."""

    checksum: bytes
    size: int
    algo: str = HASH_ALGORITHM

    def to_line(self) -> bytes:
        return json.dumps({"checksum": self.checksum.hex(), "algo": self.algo, "size": self.size},
                          separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, line: bytes | str) -> BlockChecksum:
        try:
            doc = json.loads(line)
            cs, algo, size = doc["checksum"], doc["algo"], doc["size"]
            if not isinstance(cs, str) or len(cs) != 64 or not isinstance(algo, str) or \
                    type(size) is not int:
                raise BadBlockChecksum(f"not a block checksum: {str(line)[:80]!r}")
            return cls(checksum=bytes.fromhex(cs), size=size, algo=algo)
        except (ValueError, KeyError, TypeError, RecursionError):
            raise BadBlockChecksum(f"not a block checksum: {str(line)[:80]!r}") from None


def block_checksums(data: bytes) -> list[BlockChecksum]:
    """The checksums of ``data`` in ``BLOCK_SIZE`` blocks (the last one shorter), Go ``HashPartialFile``."""
    return [BlockChecksum(hashlib.sha256(data[i:i + BLOCK_SIZE]).digest(), len(data[i:i + BLOCK_SIZE]))
            for i in range(0, len(data), BLOCK_SIZE)]


class ResumeMatcher:
    """Go ``resumeReader``, driven by the caller: ``feed`` each remote checksum with the sender's next
    bytes of that size; it tells whether they match (then they are skipped). The first mismatch, a
    short block or a bad checksum ends the matching: ``offset`` is where the upload resumes and the
    bytes read but not matched must be sent first."""

    def __init__(self) -> None:
        self.offset = 0
        self.done = False

    def check(self, cs: BlockChecksum) -> int:
        """How many bytes to read for this checksum (0: stop matching; the offset is final)."""
        if self.done:
            return 0
        if cs.algo != HASH_ALGORITHM or cs.size < 0 or cs.size > BLOCK_SIZE or cs.size == 0:
            self.done = True
            return 0
        return cs.size

    def feed(self, cs: BlockChecksum, block: bytes) -> bool:
        """``block``: the sender's next ``cs.size`` bytes (fewer at its end). True: matched and skipped."""
        if self.done:
            return False
        if not block or hashlib.sha256(block).digest() != cs.checksum or len(block) != cs.size:
            self.done = True
            return False
        self.offset += len(block)
        return True


_EXT = re.compile(r"(\.[a-zA-Z0-9]{0,3}[a-zA-Z][a-zA-Z0-9]{0,3})*$")
_NUM = re.compile(r" \([0-9]+\)")


def next_filename(name: str) -> str:
    """Go ``nextFilename``: ``foo.jpg`` → ``foo (1).jpg`` → ``foo (2).jpg`` (a name conflict)."""
    trimmed = name[1:] if name.startswith(".") else name
    m = _EXT.search(trimmed)
    ext = m.group(0) if m else ""
    if ext and name.endswith(ext):
        name = name[:len(name) - len(ext)]
    n = 0
    if _NUM.search(name):
        i = name.rfind(" (")
        digits = name[i + 2:-1]
        if digits.isdigit() and int(digits) > 0:
            n = int(digits)
            name = name[:i]
    return f"{name} ({n + 1}){ext}"
