"""``PcapWriter``: appends the engine's ``CapturedPackets`` to a pcap file (Go tsnet ``CapturePcap``).

The engine tells it bursts and never waits on it; its mailbox drops the newest when full, so a slow
disk loses capture records, never tunnel packets. A write error (disk full, file gone) ends the
capture and is kept in ``error``; the data plane does not notice.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from pytsnet.actors.runtime import Actor, StopReason, handles
from pytsnet.messages.wgengine import CaptureClosed, CapturedPackets, CloseCapture
from pytsnet.wire.pcap import CapturePath, file_header, record


class PcapWriter(Actor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.file: BinaryIO | None = None
        self.records = 0
        self.error = ""

    def on_start(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # as Go
        self.file = os.fdopen(fd, "wb")
        self.file.write(file_header())
        self.file.flush()

    def on_stop(self, reason: StopReason) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    @handles(CapturedPackets)
    def on_packets(self, msg: CapturedPackets) -> None:
        if self.file is None:
            return
        path = CapturePath(msg.path)
        try:
            self.file.write(b"".join(record(path, msg.when, p) for p in msg.packets))
            self.file.flush()  # a reader (or a crash) sees every record written so far
        except OSError as e:
            self.error = repr(e)
            self.file.close()
            self.file = None
            return
        self.records += len(msg.packets)

    @handles(CloseCapture)
    def on_close(self, msg: CloseCapture) -> CaptureClosed:
        """Everything told before this is written (one mailbox, in order): close the file now."""
        if self.file is not None:
            self.file.close()
            self.file = None
        return CaptureClosed(records=self.records, error=self.error)
