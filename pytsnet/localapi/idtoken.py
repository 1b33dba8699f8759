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
from pytsnet.wire.tailcfg.token import BadAudience, check_audience

__all__ = ["IdTokenBackend", "register"]

class IdTokenBackend(Protocol):
    @property
    def state(self) -> DeviceState: ...
    def id_token_answer(self, aud: str, timeout: float = ...) -> IdTokenAnswer: ...


def _audience(raw: str) -> str:
    """Go trims the ``aud`` form value; what is left must pass ``check_audience``."""
    return check_audience(raw.strip())


def register(api: LocalApi, backend: IdTokenBackend) -> None:
    """Add ``/localapi/v0/id-token`` to ``api`` (write access, as Go)."""

    def serve(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if backend.state.state != "Running":  # Go: ``nm == nil`` (not up yet, or logged out)
            return LocalResponse.error(503, "no netmap")
        try:
            aud = _audience(req.query.get("aud", ""))
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
