"""The current GOP of a stream: every packet since the last video keyframe start.

Used twice: by the fan-out (a new client starts at once on a keyframe) and by
each source of a feed (a standby's current GOP, with the parameter sets in
force, ready for a thumbnail or an inspection). Bounded in bytes and in age:
a GOP that grows past either bound is dropped and the buffer stays empty until
the next keyframe, so a source with a very long GOP costs no more than the
bound.
"""

from __future__ import annotations


class GopBuffer:
    """Packets ``(track, bytes)`` from the last keyframe start on, within the bounds."""

    __slots__ = ("bytes", "limit_bytes", "limit_seconds", "packets", "started", "valid")

    def __init__(self, limit_bytes: int = 8 << 20, limit_seconds: float = 30.0) -> None:
        self.limit_bytes = limit_bytes
        self.limit_seconds = limit_seconds
        self.packets: list[tuple[int, bytes | bytearray]] = []
        self.bytes = 0
        self.started = 0.0
        """When the buffered GOP's keyframe arrived (caller's clock)."""
        self.valid = False
        """True while the buffer holds a GOP from its keyframe on."""

    def push(
        self, track: int, packet: bytes | bytearray, keyframe_start: bool, now: float = 0.0
    ) -> None:
        """Remember one packet; a keyframe start (on the video track) begins a new GOP."""
        if keyframe_start:
            self.packets.clear()
            self.bytes = 0
            self.valid = True
            self.started = now
        elif not self.valid:
            return
        self.bytes += len(packet)
        if self.bytes > self.limit_bytes or (now - self.started) > self.limit_seconds:
            self.clear()
            return
        self.packets.append((track, packet))

    def clear(self) -> None:
        """Forget the GOP (until the next keyframe start)."""
        self.packets.clear()
        self.bytes = 0
        self.valid = False

    def age(self, now: float) -> float | None:
        """Seconds since the buffered GOP's keyframe, None when empty."""
        return now - self.started if self.valid else None
