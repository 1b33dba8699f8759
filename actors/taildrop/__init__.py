"""Taildrop's receiving side: the directory files land in (``store``), the peerAPI handler (``put``) and
the supervised janitor that removes partial files nobody resumed (``janitor``)."""

from pytsnet.actors.taildrop.janitor import TAILDROP, TaildropJanitor
from pytsnet.actors.taildrop.store import PutRecord, PutRefused, TaildropStore, Upload, WaitingFile

__all__ = ["TAILDROP", "PutRecord", "PutRefused", "TaildropJanitor", "TaildropStore", "Upload", "WaitingFile"]
