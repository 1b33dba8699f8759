"""Taildrop's receiving side: the directory files land in (``store``) and the peerAPI handler (``put``)."""

from pytsnet.actors.taildrop.store import PutRecord, PutRefused, TaildropStore, Upload, WaitingFile

__all__ = ["PutRecord", "PutRefused", "TaildropStore", "Upload", "WaitingFile"]
