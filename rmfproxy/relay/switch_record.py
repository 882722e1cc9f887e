"""What one switch of a feed's relayed source looked like, for operators and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rmfproxy.relay.policy import Reason
from rmfproxy.upstream.loss import LossReason


class SwitchCause(StrEnum):
    """What made a switch, when it was not the old source's session ending (then the
    cause is that session's :class:`LossReason`)."""

    OPERATOR = "operator"
    HOLD_DOWN = "hold-down"
    """A failback: the preferred source was healthy for the hold-down time."""
    START = "start"
    """The first source relayed."""
    LOST = "lost"
    """The old source is gone, no reason known."""
    INCOMPATIBLE = "incompatible"
    """The old source came back with another format."""
    RTP_OVERDUE = "rtp-overdue"
    """The old source's media stopped (a freeze) while its session lived on."""


@dataclass
class SwitchRecord:
    """One switch, as operators and benchmarks see it."""

    at: float
    """Wall-clock time the new source's first packet went out."""
    from_source: str | None
    to_source: str
    reason: Reason
    """failover, failback, manual or initial (the metric's ``direction``)."""
    cause: LossReason | SwitchCause
    """What made it (a metric label, so from a fixed set)."""
    detection_s: float
    """From the old source's last packet to the decision (0 for a planned switch)."""
    gap_s: float
    """From the last packet relayed before the switch to the first one after it."""
