"""Wraparound arithmetic for 16-bit RTP sequence numbers and 32-bit timestamps (RFC 3550 §A.1)."""

from __future__ import annotations


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**16."""
    return (a + n) & 0xFFFF


def seq_diff(a: int, b: int) -> int:
    """The signed shortest distance ``a - b`` in [-32768, 32767]."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def seq_lt(a: int, b: int) -> bool:
    """True if ``a`` comes before ``b`` (within half the sequence space)."""
    return seq_diff(a, b) < 0


def ts_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & 0xFFFFFFFF


def ts_diff(a: int, b: int) -> int:
    """The signed shortest distance ``a - b`` between two 32-bit timestamps."""
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d >= 0x80000000 else d


def ts_lt(a: int, b: int) -> bool:
    """True if timestamp ``a`` comes before ``b``."""
    return ts_diff(a, b) < 0
