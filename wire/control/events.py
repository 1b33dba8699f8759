"""What the login machine is told: the actor's asks and the results of the requests it made.

Every event names the connection (``conn``) or map poll (``stream``) it belongs to, so a late result
of a connection the machine has already given up is recognised and ignored (Go cancels a context;
a sans-IO machine compares numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

from pytsnet.wire.tailcfg.hostinfo import NetInfo

__all__ = ["Connected", "Event", "LiteUpdateAnswered", "LiteUpdateAsked", "LogoutAsked", "MapFrameReceived",
           "MapPollAnswered", "MapPollEnded", "RegisterAnswered", "Tick", "TkaHeadAdopted"]


@dataclass(frozen=True)
class Connected:
    """``Connect(conn)`` finished: the Noise connection is up (``error`` empty) or could not be made."""

    conn: int
    error: str = ""


@dataclass(frozen=True)
class RegisterAnswered:
    """``SendRegister`` finished: HTTP ``status`` and ``body``, or ``error`` (no answer at all)."""

    conn: int
    status: int = 0
    body: bytes = b""
    error: str = ""


@dataclass(frozen=True)
class MapPollAnswered:
    """The streaming map request of poll ``stream`` got its response headers."""

    stream: int
    status: int


@dataclass(frozen=True)
class MapFrameReceived:
    """One decompressed MapResponse JSON of poll ``stream``."""

    stream: int
    payload: bytes


@dataclass(frozen=True)
class MapPollEnded:
    """Poll ``stream`` ended: control closed it, the connection failed or the watchdog fired."""

    stream: int
    error: str


@dataclass(frozen=True)
class LiteUpdateAsked:
    """Tell control these endpoints (and disco key / home region, when set); answer ``token``."""

    token: int
    endpoints: tuple[str, ...] = ()
    endpoint_types: tuple[int, ...] = ()
    disco_key: str = ""
    preferred_derp: int = 0
    services_hash: str | None = None
    """Services (20d): a new ``Hostinfo.ServicesHash``; when set, the endpoint fields are not used."""
    ingress: tuple[bool, bool] | None = None
    """20g: new ``(Hostinfo.IngressEnabled, Hostinfo.WireIngress)``; when set, as ``services_hash``."""
    net_info: NetInfo | None = None
    """The netcheck's findings for ``Hostinfo.NetInfo`` (its ``PreferredDERP`` is ``preferred_derp``'s);
    None keeps the current ones."""


@dataclass(frozen=True)
class TkaHeadAdopted:
    """The TKA actor adopted ``head`` (base32 text; "" = no lock): send it as ``MapRequest.TKAHead``
    from now on, and now in a lite update answered as ``token`` if it changed (Go ``SetTKAHead``)."""

    token: int
    head: str


@dataclass(frozen=True)
class LiteUpdateAnswered:
    """``SendLiteUpdate(token)`` finished: HTTP ``status``, or ``error``."""

    token: int
    status: int = 0
    error: str = ""


@dataclass(frozen=True)
class LogoutAsked:
    """Deregister and forget the node key; answer ``token`` when done."""

    token: int


@dataclass(frozen=True)
class Tick:
    """A ``WakeAt(at)`` the machine asked for came due (possibly early, if clocks disagree)."""

    at: float


Event = (Connected | RegisterAnswered | MapPollAnswered | MapFrameReceived | MapPollEnded | LiteUpdateAsked
         | LiteUpdateAnswered | LogoutAsked | Tick | TkaHeadAdopted)

