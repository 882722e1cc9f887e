"""The current GOP of a stream: every packet since the last video keyframe start.

Used twice: by the fan-out (a new client starts at once on a keyframe) and by
each source of a feed (a standby's current GOP, with the parameter sets in
force, ready for a thumbnail or an inspection). Bounded in bytes and in age:
a GOP that grows past either bound is dropped and the buffer stays empty until
the next keyframe, so a source with a very long GOP costs no more than the
bound.

A source's buffer needs only the GOP's first access unit (the keyframe a
thumbnail decodes; its size and age are still tracked for the whole GOP):
``first_unit_only`` keeps just that, so the pictures of a camera are held
twice at most (the fan-out's GOP, and each source's keyframe), not three times.

The bytes are copied into one anonymous memory map per buffer, not kept as the
packet objects: thousands of ~1.4 KB packets that live up to a GOP, scattered
in glibc's heap among blocks freed within a loop turn, kept whole pages of it
resident (``bench/scale.py --memory-report``: 41 MB free inside the heap at 40
cameras, half of what the GOPs held). The map is as large as the byte bound
but only the pages written are resident, and they are given back
(``MADV_DONTNEED``) when a GOP ends, so a buffer costs what its current GOP
holds. A client that attaches gets copies (:attr:`GopBuffer.packets`).
"""

from __future__ import annotations

import mmap
from array import array
from collections.abc import Sequence

RELEASE_BYTES = 64 << 10
"""A GOP's pages are given back when it ends if they reach this size (smaller ones are
overwritten by the next GOP: a stream whose every packet is a keyframe start, audio
alone, does not make a system call per packet)."""


class GopBuffer:
    """Packets ``(track, bytes)`` from the last keyframe start on, within the bounds."""

    __slots__ = (
        "_ends",
        "_map",
        "_touched",
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
        self._map: mmap.mmap | None = None
        """The kept packets' bytes, back to back from offset 0 (mapped at the first one)."""
        self._ends = array("q")
        """Where each kept packet ends in the map."""
        self._tracks = array("i")
        """Each kept packet's track."""
        self._touched = 0
        """How far the map was written since its pages were last given back."""
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
            m = self._map or self._mapped()
            m.write(packet)
            self._ends.append(m.tell())
            self._tracks.append(track)

    def push_unit(
        self, track: int, packets: Sequence[bytes | bytearray], keyframe: bool, now: float = 0.0
    ) -> None:
        """Remember one access unit's packets; a keyframe unit begins a new GOP."""
        size = 0
        for pkt in packets:
            size += len(pkt)
        if self._counted(size, keyframe, now) and (keyframe or not self.first_unit_only):
            m = self._map or self._mapped()
            ends = self._ends
            for pkt in packets:
                m.write(pkt)
                ends.append(m.tell())
            self._tracks.extend([track] * len(packets))

    def _mapped(self) -> mmap.mmap:
        """The map, made at the first packet kept: as large as the byte bound (nothing kept
        goes past it: a GOP that would is dropped first), of which only what is written
        becomes resident."""
        self._map = mmap.mmap(-1, max(self.limit_bytes, 1), flags=mmap.MAP_PRIVATE)
        return self._map

    def _counted(self, size: int, keyframe_start: bool, now: float) -> bool:
        """Count ``size`` more bytes of the GOP (a keyframe start begins a new one); False if
        there is no GOP to add them to or it just went past a bound."""
        if keyframe_start:
            self._empty()
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

    def _empty(self) -> None:
        """Forget the kept packets; give their pages back if they are many."""
        m = self._map
        if m is None:
            return
        touched = max(self._touched, m.tell())
        if touched >= RELEASE_BYTES:
            m.madvise(mmap.MADV_DONTNEED, 0, touched)
            touched = 0
        self._touched = touched
        m.seek(0)
        del self._ends[:]
        del self._tracks[:]

    def clear(self) -> None:
        """Forget the GOP (until the next keyframe start)."""
        self._empty()
        self.bytes = 0
        self.valid = False

    @property
    def packets(self) -> list[tuple[int, bytes | bytearray]]:
        """Copies of the buffered packets with their tracks, in order (for a client that
        attaches or a snapshot, not for the packet path)."""
        m = self._map
        if m is None:
            return []
        out: list[tuple[int, bytes | bytearray]] = []
        start = 0
        for track, end in zip(self._tracks, self._ends, strict=True):
            out.append((track, m[start:end]))
            start = end
        return out

    def age(self, now: float) -> float | None:
        """Seconds since the buffered GOP's keyframe, None when empty."""
        return now - self.started if self.valid else None
