"""Messages of the node's certificate manager (``actors/cert``: Go ``ipn/ipnlocal/cert.go``) and of
control's ``/machine/set-dns`` (``tailcfg.SetDNSRequest``), which its DNS-01 orders use.

``GetCertPair`` asks for a cert for one of the node's ``CertDomains`` (the facade passes the ones
in its netmap); the answer carries the PEM pair or a typed failure (``kind``). The private key is a
``Secret`` (left out of repr and traces). ``CertOrderDone`` is what an order's worker thread tells
the manager.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pytsnet.messages.base import Message, Request
from pytsnet.messages.redact import secret_field

__all__ = ["CertFailure", "CertManagerSpawn", "CertOrderDone", "CertPairAnswer", "CertStatus",
           "GetCertPair", "GetCertStatus", "IoSetDnsAnswer", "KeyPemText", "SetDns", "SetDnsAnswer"]

KeyPemText = Annotated[str, secret_field("cert:KeyPEM"), Field(repr=False)]
"""A certificate's private key (PEM; in the state store under ``<domain>.key``)."""

CertFailure = Literal["", "https_disabled", "invalid_domain", "acme"]
"""Why no pair: HTTPS not enabled on the tailnet (no CertDomains), a domain not in CertDomains, or
the ACME order failed (the message names the step)."""


class SetDnsAnswer(Message, tag="control.set_dns_answer"):
    """Control's answer: HTTP ``status`` (200: the record is published) and its first bytes of
    ``body``, or ``error`` when no request could be made (``status`` 503: no session)."""

    status: int = 0
    body: str = ""
    error: str = ""


class IoSetDnsAnswer(Message, tag="control.io_set_dns_answer"):
    """The set-dns request ``token`` got HTTP ``status`` and ``body`` (its first 512 bytes), or ``error``."""

    token: int
    status: int = 0
    body: str = ""
    error: str = ""


class SetDns(Request[SetDnsAnswer], tag="control.set_dns"):
    """``POST /machine/set-dns`` (``tailcfg.SetDNSRequest``) on the current Noise connection."""

    name: str
    type: str = "TXT"
    value: str


class CertManagerSpawn(Message, tag="cert.spawn"):
    """The manager's settings: where ACME lives and whom to ask for set-dns."""

    directory_url: str
    ca_file: str = ""
    """The CA bundle the ACME server's TLS is checked against ("": the default bundle)."""
    control: str = "control"
    order_timeout: float = 120.0


class CertPairAnswer(Message, tag="cert.pair_answer"):
    cert_pem: str = ""
    key_pem: KeyPemText = ""
    cached: bool = False
    failure: CertFailure = ""
    error: str = ""


class GetCertPair(Request[CertPairAnswer], tag="cert.get_pair"):
    """A cert for ``domain``: the cached one while valid (a renewal starts in the background past
    2/3 of its lifetime, as Go), else a new ACME order (one at a time per domain)."""

    domain: str
    cert_domains: tuple[str, ...] = ()


class CertOrderDone(Message, tag="cert.order_done"):
    domain: str
    cert_pem: str = ""
    key_pem: KeyPemText = ""
    error: str = ""


class CertStatus(Message, tag="cert.status"):
    counters: dict[str, int] = {}
    """``orders`` started, ``issued``, ``failed``, ``cache_hits``, ``renewals`` started in the background."""
    ordering: tuple[str, ...] = ()


class GetCertStatus(Request[CertStatus], tag="cert.get_status"):
    """The manager's counters and the domains with an order under way."""
