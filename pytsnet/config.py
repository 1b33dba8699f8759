"""``Config``: what an app sets to embed a node, with tsnet's defaults and environment fallbacks.

Defaults follow Go's ``tsnet.Server`` (features.md §7): hostname = the program name; auth key from
``TS_AUTHKEY`` then ``TS_AUTH_KEY``; control URL from ``TS_CONTROL_URL`` then Tailscale's; state in
``dir`` (default ``<user config dir>/tsnet-<program>``), or in memory for an ephemeral node without
a dir.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["DEFAULT_CONTROL_URL", "Config", "program_name"]

DEFAULT_CONTROL_URL = "https://controlplane.tailscale.com"


def program_name() -> str:
    """Lower-case base name of the running program without ``.exe`` / ``.py`` (tsnet's ``progName``)."""
    name = Path(sys.argv[0] if sys.argv and sys.argv[0] else "tsnet").name.lower()
    for suffix in (".exe", ".py"):
        name = name.removesuffix(suffix)
    return name if name and name not in ("-c", "__main__") else "tsnet"


def _user_config_dir() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg) if xdg else Path.home() / ".config"


@dataclass(frozen=True)
class Config:
    dir: str | Path | None = None
    hostname: str | None = None
    auth_key: str | None = None
    control_url: str | None = None
    ephemeral: bool = False
    tags: tuple[str, ...] = ()
    port: int = 0
    """UDP port for the data plane; 0 = OS-chosen."""

    def resolved(self) -> Config:
        """A copy with every default and environment fallback applied."""
        env = os.environ
        prog = program_name()
        directory = self.dir
        if directory is None and not self.ephemeral:
            directory = _user_config_dir() / f"tsnet-{prog}"
        return replace(
            self,
            dir=Path(directory) if directory is not None else None,
            hostname=self.hostname or prog,
            auth_key=self.auth_key or env.get("TS_AUTHKEY") or env.get("TS_AUTH_KEY") or "",
            control_url=(self.control_url or env.get("TS_CONTROL_URL") or DEFAULT_CONTROL_URL).rstrip("/"),
            tags=tuple(self.tags),
        )
