"""``Config.port_mapping_protocols``: a non-empty subset of NAT-PMP, PCP and UPnP, in the order tried;
anything else is refused before a node starts."""

from __future__ import annotations

import pytest

from pytsnet.config import Config
from pytsnet.errors import ConfigError


@pytest.mark.parametrize("protocols", [(), ("pmp", "nat-pmp"), ("UPNP",)])
def test_unknown_or_empty_protocol_lists_are_refused(protocols: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="port_mapping_protocols"):
        Config(ephemeral=True, port_mapping=True, port_mapping_protocols=protocols).resolved()


def test_a_subset_in_any_order_is_kept() -> None:
    cfg = Config(ephemeral=True, port_mapping=True, port_mapping_protocols=("upnp", "pmp")).resolved()
    assert cfg.port_mapping_protocols == ("upnp", "pmp")
