"""Users and logins as control describes them (``tailcfg.User``, ``Login``, ``UserProfile``)."""

from __future__ import annotations

from datetime import datetime

from pytsnet.wire.tailcfg.base import GoModel


class User(GoModel):
    go_always = frozenset({"ID", "DisplayName"})
    ID: int = 0
    DisplayName: str = ""
    ProfilePicURL: str = ""
    Created: datetime | None = None


class Login(GoModel):
    go_always = frozenset({"ID", "Provider", "LoginName", "DisplayName"})
    ID: int = 0
    Provider: str = ""
    LoginName: str = ""
    DisplayName: str = ""
    ProfilePicURL: str = ""


class UserProfile(GoModel):
    go_always = frozenset({"ID", "LoginName", "DisplayName"})
    ID: int = 0
    LoginName: str = ""
    DisplayName: str = ""
    ProfilePicURL: str = ""
    Groups: list[str] = []
