"""``POST /machine/register`` bodies (``tailcfg.RegisterRequest`` / ``RegisterResponse``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pytsnet.wire.tailcfg.base import GoModel
from pytsnet.wire.tailcfg.base import NLKey as _NLKey
from pytsnet.wire.tailcfg.base import NodeKey as _NodeKey
from pytsnet.wire.tailcfg.hostinfo import Hostinfo as _Hostinfo
from pytsnet.wire.tailcfg.user import Login as _Login
from pytsnet.wire.tailcfg.user import User as _User

LOGOUT_EXPIRY = datetime.fromisoformat("1970-01-01T00:02:03+00:00")
"""``time.Unix(123, 0)``: the Expiry a client sends to log out."""


class RegisterResponseAuth(GoModel):
    Oauth2Token: dict[str, Any] | None = None
    AuthKey: str = ""


class RegisterRequest(GoModel):
    go_always = frozenset({"Version", "NodeKey", "OldNodeKey", "NLKey", "Expiry", "Followup", "Hostinfo",
                           "NodeKeySignature"})
    Version: int = 0
    NodeKey: _NodeKey = None
    OldNodeKey: _NodeKey = None
    NLKey: _NLKey = None
    Auth: RegisterResponseAuth | None = None
    Expiry: datetime | None = None
    Followup: str = ""
    Hostinfo: _Hostinfo | None = None
    Ephemeral: bool = False
    NodeKeySignature: str | None = None
    """base64 of a CBOR node-key signature (tailnet lock); Go sends ``null`` when absent."""
    SignatureType: int = 0
    Timestamp: datetime | None = None
    DeviceCert: str = ""
    Signature: str = ""
    Tailnet: str = ""


class RegisterResponse(GoModel):
    go_always = frozenset({"User", "Login", "NodeKeyExpired", "MachineAuthorized", "AuthURL", "Error"})
    User: _User = _User()
    Login: _Login = _Login()
    NodeKeyExpired: bool = False
    MachineAuthorized: bool = False
    AuthURL: str = ""
    NodeKeySignature: str | None = None
    Error: str = ""
