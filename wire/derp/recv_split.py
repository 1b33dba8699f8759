"""Split a DERP client's inbound stream: RecvPacket frames for the packet lane, every other frame for the
``ClientConnection``.

magicsock's DERP reader thread frames the stream itself (issue 14: one thread hand-off fewer per read)
and hands RecvPackets to the engine while the connection's owner keeps its ``ClientConnection`` for the
rest (handshake, pings and pongs, PeerGone, health, the read deadline). The split must not change what
the connection accepts, so packets are split off only while the handshake is known good: after a
ServerInfo frame the owner opened (``server_info_opened``), and never after a ServerInfo frame the
owner has not opened yet (a bad one closes the connection, and the packets behind it must go to the
owner with it, as they would without the split). Before that, and for every other frame, the frame's
bytes go to the owner unchanged, in order. Checks are ``ClientConnection.receive_packets``': a framing
error raises here (the stream is dead), a RecvPacket shorter than a key goes to the owner (which drops
it), a packet over ``MAX_PACKET_SIZE`` is dropped.
"""

from __future__ import annotations

from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.reader import CLIENT_MAX_FRAME_LEN, FrameReader

_RECV_PACKET = int(f.FrameType.RECV_PACKET)
_SERVER_INFO = int(f.FrameType.SERVER_INFO)

RawPacket = tuple[bytes, bytes]
"""(the source's 32-byte key, the packet), as ``ClientConnection.receive_packets`` gives it."""


class RecvSplitter:
    """Frames one client stream; see the module docstring. ``feed`` runs on one thread (the reader);
    ``server_info_opened`` may be called from another (the owner): each side writes only its own count."""

    def __init__(self, max_frame_len: int = CLIENT_MAX_FRAME_LEN) -> None:
        self._reader = FrameReader(max_frame_len)
        self._infos_seen = 0  # ServerInfo frames handed to the owner (written by feed)
        self._infos_opened = 0  # ... that the owner opened (written by server_info_opened)
        self.reads = 0
        """Feeds that completed at least one frame: the owner's read deadline counts them as traffic."""
        self.dropped_oversize = 0

    @property
    def armed(self) -> bool:
        """Packets are split off: every ServerInfo frame so far was opened by the owner."""
        return self._infos_seen > 0 and self._infos_opened == self._infos_seen

    def server_info_opened(self) -> None:
        """The owner's ``ClientConnection`` opened a ServerInfo frame this splitter handed it."""
        self._infos_opened += 1

    def feed(self, data: bytes) -> tuple[list[RawPacket], bytes]:
        """Append ``data``; return the packets split off and the bytes of every other complete frame.

        Raises the reader's ``WireError`` on a framing error (the stream cannot be resynced)."""
        armed = self.armed
        frames = self._reader.feed_split(data, _RECV_PACKET if armed else -1)
        if not frames:
            return [], b""
        self.reads += 1
        packets: list[RawPacket] = []
        rest = bytearray()
        for t, a, b in frames:
            if b is not None:
                if armed:
                    if len(b) <= f.MAX_PACKET_SIZE:
                        packets.append((a, b))
                    else:
                        self.dropped_oversize += 1
                    continue
                rest += f.encode_header(t, len(a) + len(b))  # after a ServerInfo in this read: the owner's
                rest += a
                rest += b
                continue
            if t == _SERVER_INFO:
                self._infos_seen += 1
                armed = False
            rest += f.encode_header(t, len(a))
            rest += a
        return packets, bytes(rest)
