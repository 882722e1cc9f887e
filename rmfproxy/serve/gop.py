"""The current GOP of a stream: every packet since the last video keyframe start.

Used twice: by the fan-out (a new client starts at once on a keyframe) and by
each source of a feed (a standby's current GOP, with the parameter sets in
force, ready for a thumbnail or an inspection). Bounded in bytes and in age:
a GOP that grows past either bound is dropped and the buffer stays empty until
the next keyframe, so a source with a very long GOP costs no more than the
bound.

A source's buffer needs only the GOP's first access unit (the keyframe a
thumbnail decodes; its size and age are still tracked for the whole GOP):
``first_unit_only`` keeps just that, so the pictures of a camera are held once,
by the fan-out, and not again by each of its sources. The packets are not
copied: the fan-out's GOP and the source's keyframe unit share the same
objects when that source's copy is the one that went out.
"""

from __future__ import annotations

from collections.abc import Sequence


class GopBuffer:
    """Packets ``(track, bytes)`` from the last keyframe start on, within the bounds."""

    __slots__ = (
        "_packets",
        "_tracks",
        "bytes",
        "first_unit_only",
        "limit_bytes",
        "limit_seconds",
        "started",
        "valid",
    )

    def __init__(
        self,
        limit_bytes: int = 8 << 20,
        limit_seconds: float = 30.0,
        *,
        first_unit_only: bool = False,
    ) -> None:
        self.limit_bytes = limit_bytes
        self.limit_seconds = limit_seconds
        self.first_unit_only = first_unit_only
        """Keep only the GOP's first unit (see the module docstring)."""
        self._packets: list[bytes | bytearray] = []
        self._tracks: list[int] = []
        """Each packet's track: two lists, not a ``(track, packet)`` tuple per packet (64
        bytes each, a few percent of a camera's GOP)."""
        self.bytes = 0
        """Bytes of the current GOP so far (all of it, even when only its first unit is kept)."""
        self.started = 0.0
        """When the buffered GOP's keyframe arrived (caller's clock)."""
        self.valid = False
        """True while the buffer holds a GOP from its keyframe on."""

    def push(
        self, track: int, packet: bytes | bytearray, keyframe_start: bool, now: float = 0.0
    ) -> None:
        """Remember one packet; a keyframe start (on the video track) begins a new GOP (and,
        with ``first_unit_only``, is the only packet kept of it)."""
        if self._counted(len(packet), keyframe_start, now) and (
            keyframe_start or not self.first_unit_only
        ):
            self._packets.append(packet)
            self._tracks.append(track)

    def push_unit(
        self, track: int, packets: Sequence[bytes | bytearray], keyframe: bool, now: float = 0.0
    ) -> None:
        """Remember one access unit's packets; a keyframe unit begins a new GOP."""
        size = 0
        for pkt in packets:
            size += len(pkt)
        if self._counted(size, keyframe, now) and (keyframe or not self.first_unit_only):
            self._packets.extend(packets)
            self._tracks.extend([track] * len(packets))

    def _counted(self, size: int, keyframe_start: bool, now: float) -> bool:
        """Count ``size`` more bytes of the GOP (a keyframe start begins a new one); False if
        there is no GOP to add them to or it just went past a bound."""
        if keyframe_start:
            self._packets.clear()
            self._tracks.clear()
            self.bytes = 0
            self.valid = True
            self.started = now
        elif not self.valid:
            return False
        self.bytes += size
        if self.bytes > self.limit_bytes or (now - self.started) > self.limit_seconds:
            self.clear()
            return False
        return True

    def clear(self) -> None:
        """Forget the GOP (until the next keyframe start)."""
        self._packets.clear()
        self._tracks.clear()
        self.bytes = 0
        self.valid = False

    @property
    def packets(self) -> list[tuple[int, bytes | bytearray]]:
        """The buffered packets with their tracks, in order (a new list: for a client
        that attaches or a snapshot, not for the packet path)."""
        return list(zip(self._tracks, self._packets, strict=True))

    def age(self, now: float) -> float | None:
        """Seconds since the buffered GOP's keyframe, None when empty."""
        return now - self.started if self.valid else None
