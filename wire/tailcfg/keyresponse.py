"""``GET /key`` answer (``tailcfg.OverTLSPublicKeyResponse``) and the Noise early payload (``EarlyNoise``)."""

from __future__ import annotations

from pydantic import Field

from pytsnet.wire.tailcfg.base import GoModel
from pytsnet.wire.tailcfg.base import MachineKey as _MachineKey


class OverTLSPublicKeyResponse(GoModel):
    go_always = frozenset({"legacyPublicKey", "publicKey"})
    LegacyPublicKey: _MachineKey = Field(default=None, alias="legacyPublicKey")
    PublicKey: _MachineKey = Field(default=None, alias="publicKey")
    """The control server's Noise static key."""

    model_config = GoModel.model_config | {"populate_by_name": True, "serialize_by_alias": True}


class EarlyNoise(GoModel):
    go_always = frozenset({"nodeKeyChallenge"})
    NodeKeyChallenge: str = Field(default="", alias="nodeKeyChallenge")
    """``chalpub:<hex>``."""

    model_config = GoModel.model_config | {"populate_by_name": True, "serialize_by_alias": True}
