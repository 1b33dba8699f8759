"""The LocalAPI's ``id-token`` endpoint (Go ``serveIDToken``): an OIDC ID token for an audience, from control.

Go's handler needs ``PermitWrite`` ("id-token access denied"), a netmap (503 "no netmap"), a
non-empty ``aud`` (400 "no audience requested"), then sends ``tailcfg.TokenRequest`` to control over
Noise and copies control's status and body. Here the same, plus an audience that is too long or not
printable ASCII is refused (400) before anything reaches control: it would be signed into a token.
The token is a bearer credential: it is returned, never logged.
"""

from __future__ import annotations

from typing import Protocol

from pytsnet.localapi.server import LocalApi, LocalRequest, LocalResponse
from pytsnet.messages.control import DeviceState, IdTokenAnswer

__all__ = ["MAX_AUDIENCE", "BadAudience", "IdTokenBackend", "check_audience", "register"]

MAX_AUDIENCE = 512
"""Longest audience asked for (ours; Go has none): a URL or a service name, never a payload."""


class BadAudience(ValueError):
    """The audience is empty, too long or not printable ASCII."""


class IdTokenBackend(Protocol):
    @property
    def state(self) -> DeviceState: ...
    def id_token_answer(self, aud: str, timeout: float = ...) -> IdTokenAnswer: ...


def check_audience(raw: str) -> str:
    """Go trims the ``aud`` form value; what is left must be 1..MAX_AUDIENCE printable ASCII characters."""
    aud = raw.strip()
    if not aud:
        raise BadAudience("no audience requested")
    if len(aud) > MAX_AUDIENCE:
        raise BadAudience(f"audience longer than {MAX_AUDIENCE} characters")
    if not all(0x21 <= ord(c) <= 0x7E for c in aud):
        raise BadAudience("audience must be printable ASCII without spaces")
    return aud


def register(api: LocalApi, backend: IdTokenBackend) -> None:
    """Add ``/localapi/v0/id-token`` to ``api`` (write access, as Go)."""

    def serve(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if backend.state.state != "Running":  # Go: ``nm == nil`` (not up yet, or logged out)
            return LocalResponse.error(503, "no netmap")
        try:
            aud = check_audience(req.query.get("aud", ""))
        except BadAudience as e:
            return LocalResponse.error(400, str(e))
        answer = backend.id_token_answer(aud)
        if answer.status == 0:
            return LocalResponse.error(500, answer.error or "no answer from control")
        if answer.error:
            return LocalResponse.error(answer.status, answer.error)
        ctype = "application/json" if answer.status == 200 else "text/plain; charset=utf-8"
        return LocalResponse(answer.status, answer.body, ctype)

    api.route("id-token", serve, "write")
