"""pytsnet: embed a Tailscale node in a Python application."""

__version__ = "0.1.0"
