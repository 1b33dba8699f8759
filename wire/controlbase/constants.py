"""Constants of the ts2021 control transport (control/controlbase/{handshake,messages,conn}.go)."""

from typing import Final

PROTOCOL_NAME: Final = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
"""The Noise instantiation; hashed to seed the symmetric state."""

PROTOCOL_VERSION_PREFIX: Final = b"Tailscale Control Protocol v"
"""Prologue prefix; the decimal protocol version from the cleartext header follows it."""

MSG_TYPE_INITIATION: Final = 0x01
MSG_TYPE_RESPONSE: Final = 0x02
MSG_TYPE_ERROR: Final = 0x03
MSG_TYPE_RECORD: Final = 0x04

HEADER_LEN: Final = 3
"""Type (1) + big-endian length (2): the header of every message but the initiation."""
INITIATION_HEADER_LEN: Final = 5
"""Version (2) + type (1) + length (2)."""

KEY_LEN: Final = 32
TAG_LEN: Final = 16
INITIATION_PAYLOAD_LEN: Final = KEY_LEN + (KEY_LEN + TAG_LEN) + TAG_LEN  # 96
INITIATION_LEN: Final = INITIATION_HEADER_LEN + INITIATION_PAYLOAD_LEN  # 101
RESPONSE_PAYLOAD_LEN: Final = KEY_LEN + TAG_LEN  # 48
RESPONSE_LEN: Final = HEADER_LEN + RESPONSE_PAYLOAD_LEN  # 51

MAX_MESSAGE_SIZE: Final = 4096
"""Largest record on the wire, header included."""
MAX_CIPHERTEXT_SIZE: Final = MAX_MESSAGE_SIZE - HEADER_LEN  # 4093
MAX_PLAINTEXT_SIZE: Final = MAX_CIPHERTEXT_SIZE - TAG_LEN  # 4077
MAX_ERROR_TEXT_LEN: Final = 0xFFFF
"""An error message's length field is a uint16."""

INVALID_NONCE: Final = (1 << 64) - 1
"""A counter that reaches this value means the cipher is exhausted."""

EARLY_PAYLOAD_MAGIC: Final = b"\xff\xff\xffTS"
"""Start of the optional server→client early payload (control/ts2021/conn.go)."""
EARLY_PAYLOAD_HEADER_LEN: Final = len(EARLY_PAYLOAD_MAGIC) + 4  # 9, like an HTTP/2 frame header
MAX_EARLY_PAYLOAD_LEN: Final = 10 << 20
