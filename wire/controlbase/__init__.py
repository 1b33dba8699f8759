"""ts2021 control transport: Noise IK handshake, record layer and a byte-stream adapter for HTTP/2.

Sans-IO throughout: the caller moves bytes between these objects and a socket.
"""

from pytsnet.wire.controlbase.conn import Conn
from pytsnet.wire.controlbase.constants import (
    MAX_CIPHERTEXT_SIZE,
    MAX_MESSAGE_SIZE,
    MAX_PLAINTEXT_SIZE,
    PROTOCOL_NAME,
)
from pytsnet.wire.controlbase.early import EarlyPayloadReader, encode_early_payload
from pytsnet.wire.controlbase.errors import (
    ControlCryptoError,
    ControlParseError,
    ControlProtocolError,
    ServerErrorMessage,
)
from pytsnet.wire.controlbase.handshake import Accepted, ClientHandshake, accept_initiation
from pytsnet.wire.controlbase.messages import (
    ErrorMessage,
    InitiationMessage,
    ResponseMessage,
    encode_error_message,
)
from pytsnet.wire.controlbase.stream import ClientStream, ServerStream

__all__ = [
    "MAX_CIPHERTEXT_SIZE",
    "MAX_MESSAGE_SIZE",
    "MAX_PLAINTEXT_SIZE",
    "PROTOCOL_NAME",
    "Accepted",
    "ClientHandshake",
    "ClientStream",
    "Conn",
    "ControlCryptoError",
    "ControlParseError",
    "ControlProtocolError",
    "EarlyPayloadReader",
    "ErrorMessage",
    "InitiationMessage",
    "ResponseMessage",
    "ServerErrorMessage",
    "ServerStream",
    "accept_initiation",
    "encode_early_payload",
    "encode_error_message",
]
