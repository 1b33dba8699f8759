"""Resolver configuration pushed by control (``tailcfg.DNSConfig``, ``dnstype.Resolver``)."""

from __future__ import annotations

from typing import Any

from pytsnet.wire.tailcfg.base import GoModel


class Resolver(GoModel):
    Addr: str = ""
    BootstrapResolution: list[str] = []
    UseWithExitNode: bool = False


class DNSConfig(GoModel):
    Resolvers: list[Resolver] = []
    Routes: dict[str, list[Resolver] | None] = {}
    FallbackResolvers: list[Resolver] = []
    Domains: list[str] = []
    Proxied: bool = False
    Nameservers: list[str] = []
    CertDomains: list[str] = []
    ExtraRecords: list[dict[str, Any]] = []
    ExitNodeFilteredSet: list[str] = []
    TempCorpIssue13969: str = ""
