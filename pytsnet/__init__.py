"""pytsnet: embed a Tailscale node in a Python application."""

from pytsnet.logs import install_defaults as _install_log_defaults

__version__ = "0.1.0"

_install_log_defaults()
