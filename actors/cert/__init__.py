"""The node's TLS certificates: an ACME DNS-01 client as a supervised actor (``manager``)."""

from pytsnet.actors.cert.manager import CERT, CertManager

__all__ = ["CERT", "CertManager"]
