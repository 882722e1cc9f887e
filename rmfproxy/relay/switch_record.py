"""What one switch of a feed's relayed source looked like, for operators and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SwitchRecord:
    """One switch, as operators and benchmarks see it."""

    at: float
    """Wall-clock time the new source's first packet went out."""
    from_source: str | None
    to_source: str
    reason: str
    """failover, failback, manual or initial (the metric's ``direction``)."""
    cause: str
    """What made it: the old source's loss reason (tcp-closed, rtcp-bye, timeout, ...),
    ``rtp-overdue`` for a silent freeze, ``hold-down`` for a failback, ``operator``."""
    detection_s: float
    """From the old source's last packet to the decision (0 for a planned switch)."""
    gap_s: float
    """From the last packet relayed before the switch to the first one after it."""
