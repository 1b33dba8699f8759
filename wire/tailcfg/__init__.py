"""pydantic models of the control protocol's JSON, with Go's field names and omitempty rules."""

from pytsnet.wire.tailcfg.base import GoModel, TailcfgParseError
from pytsnet.wire.tailcfg.capver import CURRENT_CAPABILITY_VERSION
from pytsnet.wire.tailcfg.derp import DERPHomeParams, DERPMap, DERPNode, DERPRegion
from pytsnet.wire.tailcfg.dns import DNSConfig, Resolver
from pytsnet.wire.tailcfg.filter import PORT_RANGE_ANY, CapGrant, FilterRule, NetPortRange, PortRange
from pytsnet.wire.tailcfg.framing import FrameDecoder, FramingError, encode_frame
from pytsnet.wire.tailcfg.hostinfo import Hostinfo, NetInfo, Service
from pytsnet.wire.tailcfg.keyresponse import EarlyNoise, OverTLSPublicKeyResponse
from pytsnet.wire.tailcfg.map import EndpointType, MapRequest, MapResponse
from pytsnet.wire.tailcfg.node import Node, PeerChange
from pytsnet.wire.tailcfg.register import (
    LOGOUT_EXPIRY,
    RegisterRequest,
    RegisterResponse,
    RegisterResponseAuth,
)
from pytsnet.wire.tailcfg.user import Login, User, UserProfile

__all__ = [
    "CURRENT_CAPABILITY_VERSION", "LOGOUT_EXPIRY", "PORT_RANGE_ANY", "CapGrant", "DERPHomeParams", "DERPMap",
    "DERPNode", "DERPRegion", "DNSConfig", "EarlyNoise", "EndpointType", "FilterRule", "FrameDecoder",
    "FramingError", "GoModel", "Hostinfo", "Login", "MapRequest", "MapResponse", "NetInfo", "NetPortRange",
    "Node", "OverTLSPublicKeyResponse", "PeerChange", "PortRange", "RegisterRequest", "RegisterResponse",
    "RegisterResponseAuth", "Resolver", "Service", "TailcfgParseError", "User", "UserProfile", "encode_frame",
]
