"""The WireGuard engine actor (``WgEngine``) and the netmap packet-filter conversion."""

from pytsnet.actors.wgengine.engine import ENGINE_MAILBOX, WgEngine
from pytsnet.actors.wgengine.filter_rules import FilterRuleError, parse_ip_set, rules_from_tailcfg

__all__ = ["ENGINE_MAILBOX", "FilterRuleError", "WgEngine", "parse_ip_set",
           "rules_from_tailcfg"]
