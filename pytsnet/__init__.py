"""pytsnet: embed a Tailscale node in a Python application.

One import for an app::

    from pytsnet import ActorDevice, Config, DialTimeout, UnknownTailnetHost

The names load on first use (PEP 562), so ``import pytsnet.wire.keys`` or the CLI does not pay for
the whole device, and the layer packages can import ``pytsnet.<layer>`` without a cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pytsnet.logs import install_defaults as _install_log_defaults

__version__ = "0.1.0"

_install_log_defaults()

_ERRORS = ("AddressInUse", "AskTimeout", "AuthRejected", "CaptureError", "ConfigError", "ConnectionAborted",
           "ConnectionRefused", "ConnectionReset", "ConnectionTimedOut", "DataplaneNotReady", "DeviceClosed",
           "DialTimeout", "ExitNodeUnavailable", "FlowAborted", "FlowCrashed", "KeyExpired", "NeedsLogin",
           "NetworkUnreachable", "NotTailnetConnection", "OAuthRejected",
           "PytsnetError", "RegistrationError", "RegistrationTimeout", "StateDirLocked",
           "StateStoreError", "TagsNotPermitted", "TagsRequired",  # 19c: bootstrap
           "TcpConnectionError", "UnknownTailnetHost")

_EXPORTS: dict[str, str] = {
    "ActorDevice": "pytsnet.device",
    "WhoIs": "pytsnet.device",
    "DIAL_TIMEOUT": "pytsnet.device",
    "Config": "pytsnet.config",
    "DeviceState": "pytsnet.messages.control",
    "DeviceStatus": "pytsnet.messages.dataplane",
    "PeerStatus": "pytsnet.messages.dataplane",
    "PeerInfo": "pytsnet.messages.peers",
    "ExitNodeInfo": "pytsnet.messages.peers",
    "TcpStream": "pytsnet.net.stream",
    "TcpListener": "pytsnet.net.stream",
    "UdpSocket": "pytsnet.net.stream",
    "SocketLike": "pytsnet.net.socket",
    "SocketListener": "pytsnet.net.socket",
    "TailnetConnection": "pytsnet.net.bridge",
    "TailnetListenSocket": "pytsnet.net.bridge",
    "FileStore": "pytsnet.state",
    "MemoryStore": "pytsnet.state",
    **dict.fromkeys(_ERRORS, "pytsnet.errors"),
}
_EXPORTS["LocalApiError"] = "pytsnet.errors"  # 19a (LocalAPI)
_CERT_ERRORS = ("AcmeFailed", "CertError", "HttpsNotEnabled", "InvalidCertDomain")  # 20a (certificates)
_EXPORTS.update(dict.fromkeys(_CERT_ERRORS, "pytsnet.errors"))
_EXPORTS.update(dict.fromkeys(("ServeConfigInvalid", "ServeETagMismatch"), "pytsnet.errors"))  # 20b (Serve)
_EXPORTS.update(FunnelPortNotAllowed="pytsnet.errors", FunnelUnavailable="pytsnet.errors")  # 20c (Funnel)
_EXPORTS.update(dict.fromkeys(("ServiceUnavailable", "UntaggedServiceHost"), "pytsnet.errors"))  # 20d
_EXPORTS.update(dict.fromkeys(("ServiceListener", "ServiceModeHTTP", "ServiceModeTCP"),
                              "pytsnet.services.listener"))  # 20d (Services)
_EXPORTS.update(HttpServiceListener="pytsnet.services.listener")  # 20f
_LOCK_ERRORS = ("TailnetLockDisablementRefused", "TailnetLockError", "TailnetLockNotEnabled",
                "TailnetLockNotTrusted")  # 21 (Tailnet Lock)
_EXPORTS.update(dict.fromkeys(_LOCK_ERRORS, "pytsnet.errors"))
_TAILDROP_ERRORS = ("TaildropError", "TaildropFileExists", "TaildropNameInvalid", "TaildropRefused",
                    "TaildropTooLarge")  # 22a (Taildrop)
_EXPORTS.update(dict.fromkeys(_TAILDROP_ERRORS, "pytsnet.errors"))

__all__ = [
    "DIAL_TIMEOUT",
    "ActorDevice",
    "AddressInUse",
    "AskTimeout",
    "AuthRejected",
    "CaptureError",
    "Config",
    "ConfigError",
    "ConnectionAborted",
    "ConnectionRefused",
    "ConnectionReset",
    "ConnectionTimedOut",
    "DataplaneNotReady",
    "DeviceClosed",
    "DeviceState",
    "DeviceStatus",
    "DialTimeout",
    "ExitNodeInfo",
    "ExitNodeUnavailable",
    "FileStore",
    "FlowAborted",
    "FlowCrashed",
    "FunnelPortNotAllowed",
    "FunnelUnavailable",
    "KeyExpired",
    "LocalApiError",
    "MemoryStore",
    "NeedsLogin",
    "NetworkUnreachable",
    "NotTailnetConnection",
    "OAuthRejected",
    "PeerInfo",
    "PeerStatus",
    "PytsnetError",
    "RegistrationError",
    "RegistrationTimeout",
    "SocketLike",
    "SocketListener",
    "StateDirLocked",
    "StateStoreError",
    "TagsNotPermitted",
    "TagsRequired",
    "TailnetConnection",
    "TailnetListenSocket",
    "TcpConnectionError",
    "TcpListener",
    "TcpStream",
    "UdpSocket",
    "UnknownTailnetHost",
    "WhoIs",
    "__version__",
]
__all__ += ["AcmeFailed", "CertError", "HttpsNotEnabled", "InvalidCertDomain"]  # 20a (certificates)
__all__ += ["ServeConfigInvalid", "ServeETagMismatch"]  # 20b (Serve)
__all__ += ["ServiceListener", "ServiceModeHTTP", "ServiceModeTCP", "ServiceUnavailable",
            "UntaggedServiceHost"]  # 20d's own line
__all__ += ["HttpServiceListener"]  # 20f
__all__ += ["TailnetLockDisablementRefused", "TailnetLockError", "TailnetLockNotEnabled",
            "TailnetLockNotTrusted"]  # 21 (Tailnet Lock)
__all__ += ["TaildropError", "TaildropFileExists", "TaildropNameInvalid", "TaildropRefused",
            "TaildropTooLarge"]  # 22a (Taildrop)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytsnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from pytsnet.config import Config
    from pytsnet.device import DIAL_TIMEOUT, ActorDevice, WhoIs
    from pytsnet.errors import (  # 20a
        AcmeFailed,
        AddressInUse,
        AskTimeout,
        AuthRejected,
        CaptureError,
        CertError,
        ConfigError,
        ConnectionAborted,
        ConnectionRefused,
        ConnectionReset,
        ConnectionTimedOut,
        DataplaneNotReady,
        DeviceClosed,
        DialTimeout,
        ExitNodeUnavailable,
        FlowAborted,
        FlowCrashed,
        FunnelPortNotAllowed,
        FunnelUnavailable,
        HttpsNotEnabled,
        InvalidCertDomain,
        KeyExpired,
        LocalApiError,
        NeedsLogin,
        NetworkUnreachable,
        NotTailnetConnection,
        OAuthRejected,
        PytsnetError,
        RegistrationError,
        RegistrationTimeout,
        ServiceUnavailable,  # 20d
        StateDirLocked,
        StateStoreError,
        TagsNotPermitted,
        TagsRequired,
        TaildropError,  # 22a
        TaildropFileExists,
        TaildropNameInvalid,
        TaildropRefused,
        TaildropTooLarge,
        TailnetLockDisablementRefused,  # 21
        TailnetLockError,
        TailnetLockNotEnabled,
        TailnetLockNotTrusted,
        TcpConnectionError,
        UnknownTailnetHost,
        UntaggedServiceHost,
    )
    from pytsnet.messages.control import DeviceState
    from pytsnet.messages.dataplane import DeviceStatus, PeerStatus
    from pytsnet.messages.peers import ExitNodeInfo, PeerInfo
    from pytsnet.net.bridge import TailnetConnection, TailnetListenSocket
    from pytsnet.net.socket import SocketLike, SocketListener
    from pytsnet.net.stream import TcpListener, TcpStream, UdpSocket
    from pytsnet.services.listener import (  # 20d
        HttpServiceListener,  # 20f
        ServiceListener,
        ServiceModeHTTP,
        ServiceModeTCP,
    )
    from pytsnet.state import FileStore, MemoryStore
