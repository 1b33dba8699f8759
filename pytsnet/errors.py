"""Public typed errors of the pytsnet facade.

``RegistrationError`` is what ``wait_until_running`` raises: ``permanent`` tells an app whether
waiting longer can help (``AuthRejected``, ``KeyExpired``: no; ``NeedsLogin``, ``NetworkUnreachable``,
``RegistrationTimeout``: the node keeps trying in the background).
"""

from __future__ import annotations

__all__ = ["AuthRejected", "CaptureError", "ConfigError", "DeviceClosed", "KeyExpired", "NeedsLogin",
           "NetworkUnreachable", "PytsnetError", "RegistrationError", "RegistrationTimeout"]


class PytsnetError(Exception):
    """Base of every error the facade raises."""


class ConfigError(PytsnetError, ValueError):
    """A setting cannot work (e.g. a control URL without ``http://``/``https://``); fix the config."""


class RegistrationError(PytsnetError):
    permanent = False


class AuthRejected(RegistrationError):
    """Control refused the credentials (a bad, used or expired auth key; a denied login)."""

    permanent = True


class KeyExpired(RegistrationError):
    """The node key expired and control did not accept a rotated one: a new login is needed."""

    permanent = True


class NeedsLogin(RegistrationError):
    """A human must visit ``url``; the node keeps waiting for that login to finish."""

    def __init__(self, url: str) -> None:
        super().__init__(f"login required: visit {url}" if url else "login required")
        self.url = url


class NetworkUnreachable(RegistrationError):
    """Control could not be reached; the node keeps retrying with backoff."""


class RegistrationTimeout(RegistrationError, TimeoutError):
    """Still starting when the timeout passed, with no more specific reason."""


class DeviceClosed(PytsnetError):
    """The device was closed (or never started)."""


class CaptureError(PytsnetError):
    """A packet capture could not start (one is already running, or the file cannot be opened)."""
