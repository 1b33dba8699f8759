"""DERP maps as files: the one a derper writes for itself and the one ``localnet --derp-map`` hands out.

The format is Go's ``tailcfg.DERPMap`` JSON (``Regions`` → ``Nodes`` with ``HostName``, ``IPv4``,
``DERPPort``, ``STUNPort``, ``InsecureForTests``, ``CanPort80`` …), so a map written for Go's
``derper`` works here and the other way round. A loaded map is checked against our model of it and
then kept as written, so fields we do not model still reach Go nodes.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pytsnet.wire.tailcfg.derp import DERPMap

MAX_FILE = 1 << 20


class DerpMapError(ValueError):
    """A DERP map file that is missing, too large, not JSON or not a usable ``tailcfg.DERPMap``."""


def validate_derp_map(doc: Any) -> dict[str, Any]:
    """``doc`` if it is a DERP map a node can use: at least one region, each with its ``RegionID``
    as its key and at least one node naming a host (DerpMapError otherwise)."""
    if not isinstance(doc, dict):
        raise DerpMapError("a DERP map is a JSON object with Regions")
    try:
        dm = DERPMap.model_validate(doc)
    except ValidationError as e:
        raise DerpMapError(f"not a tailcfg.DERPMap: {str(e)[:300]}") from None
    if not dm.Regions:
        raise DerpMapError("the DERP map has no Regions")
    for rid, region in dm.Regions.items():
        if region.RegionID != rid:
            raise DerpMapError(f"region {rid}: RegionID is {region.RegionID}")
        if not region.Nodes:
            raise DerpMapError(f"region {rid} has no Nodes")
        for n in region.Nodes:
            if not n.HostName:
                raise DerpMapError(f"region {rid}: node {n.Name!r} has no HostName")
    return doc


def load_derp_map(path: str | Path) -> dict[str, Any]:
    """Read and check a DERP map file (DerpMapError)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_FILE + 1)
    except OSError as e:
        raise DerpMapError(f"cannot read DERP map {p}: {e.strerror or e}") from None
    if len(data) > MAX_FILE:
        raise DerpMapError(f"DERP map {p} is over {MAX_FILE} bytes")
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise DerpMapError(f"DERP map {p} is not JSON: {e}") from None
    return validate_derp_map(doc)


def single_node_map(host: str, derp_port: int, stun_port: int, *, hostname: str = "",
                    region_id: int = 900, region_code: str = "derper",
                    insecure_for_tests: bool = False) -> dict[str, Any]:
    """A one-region map for one derper at ``host`` (an IP: it goes in ``IPv4``/``IPv6`` so no DNS
    lookup happens; the other family is ``"none"``; a wildcard address needs ``hostname``, DerpMapError
    otherwise). ``stun_port`` -1: no STUN."""
    node: dict[str, Any] = {"Name": f"{region_id}a", "RegionID": region_id, "HostName": hostname or host,
                            "DERPPort": derp_port, "STUNPort": stun_port}
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if ip.is_unspecified:  # a wildcard listener: nodes can only find it by its host name
            if not hostname:
                raise DerpMapError(f"listening on {host}: a DERP map needs the relay's host name")
        else:
            fam, other = ("IPv4", "IPv6") if ip.version == 4 else ("IPv6", "IPv4")
            node[fam], node[other] = str(ip), "none"
    if insecure_for_tests:
        node["InsecureForTests"] = True
    return {"Regions": {str(region_id): {"RegionID": region_id, "RegionCode": region_code,
                                         "RegionName": "pytsnet derper", "Nodes": [node]}}}
