"""``ActorDevice.capture_pcap``: Go tsnet's ``CapturePcap``, as a handle that can also stop.

Every plaintext packet the WireGuard engine carries (from our stack to a peer, and from a peer
before the packet filter) goes to a pcap in Go's format (``pytsnet.wire.pcap``), readable with
Tailscale's Wireshark dissector. For debugging: it costs a copy per burst while it runs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pytsnet.actors.capture import PcapWriter
from pytsnet.actors.runtime import (
    ActorRef,
    ActorStartError,
    ActorStopped,
    ActorSystem,
    MailboxConfig,
    MailboxPolicy,
    NameTaken,
    Restart,
)
from pytsnet.errors import CaptureError
from pytsnet.messages.wgengine import CloseCapture

__all__ = ["CAPTURE", "PcapCapture", "start_capture"]

CAPTURE = "capture"  # the engine hands plaintext to the actor registered under this name
_MAILBOX = MailboxConfig(4096, MailboxPolicy.DROP_NEWEST)  # a slow disk loses records, not packets


class PcapCapture:
    """A running capture; ``stop()`` (or closing the device) ends it and closes the file."""

    def __init__(self, path: Path, ref: ActorRef) -> None:
        self.path = path
        self._ref = ref

    def stop(self, timeout: float = 5.0) -> None:
        """Write what was captured so far, close the file, end the writer. Idempotent."""
        with contextlib.suppress(ActorStopped, TimeoutError):
            self._ref.ask(CloseCapture(), timeout=timeout)
        self._ref.stop()

    def __enter__(self) -> PcapCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_capture(system: ActorSystem, path: str | os.PathLike[str]) -> PcapCapture:
    p = Path(path)
    try:
        ref = system.spawn(PcapWriter, str(p), name=CAPTURE, mailbox=_MAILBOX, restart=Restart.NEVER)
    except NameTaken as e:
        raise CaptureError("a packet capture is already running on this device") from e
    except ActorStartError as e:
        raise CaptureError(f"cannot write {p}: {e.__cause__ or e}") from e
    return PcapCapture(p, ref)

