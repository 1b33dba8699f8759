"""The typed errors of Tailnet Lock (TKA): every wire/tka parser and check raises these, nothing else.

Callers catch ``TkaError`` for all of them; the subclasses say whether the bytes were malformed,
a signature or key did not check out, or an AUM does not fit the chain.
"""

from pytsnet.wire.errors import WireError


class TkaError(WireError):
    """Base of all Tailnet Lock errors (also raised for a rule violation with no finer kind)."""


class TkaDecodeError(TkaError, ValueError):
    """Bytes or text that are not a valid TKA encoding (bad CBOR, a limit exceeded, a wrong type)."""


class TkaVerifyError(TkaError):
    """A signature that does not verify, or a key the authority does not trust."""


class TkaChainError(TkaError):
    """An AUM that does not fit: wrong parent, missing ancestor, bad fork or checkpoint."""


class TkaKeyNotFound(TkaError):
    """The KeyID names no key of the state (Go's ``ErrNoSuchKey``)."""
