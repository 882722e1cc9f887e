"""RTCP: SR/RR/BYE round trips, SDES CNAME, malformed input rejected with a message."""

from __future__ import annotations

import pytest

from rmfproxy.rtp import rtcp


def test_sender_report_roundtrip_with_cname() -> None:
    ntp = rtcp.ntp_from_unix(1_700_000_000.25)
    data = rtcp.build_sender_report(0xCAFE, ntp, 12345, 10, 2000, cname="cam")
    sr, sdes = rtcp.parse_compound(data)
    assert isinstance(sr, rtcp.SenderReport)
    assert (sr.ssrc, sr.ntp_timestamp, sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (
        0xCAFE,
        ntp,
        12345,
        10,
        2000,
    )
    assert isinstance(sdes, rtcp.RtcpOther) and sdes.packet_type == rtcp.SDES
    assert abs(rtcp.unix_from_ntp(ntp) - 1_700_000_000.25) < 1e-6


def test_receiver_report_and_bye() -> None:
    block = rtcp.ReportBlock(7, 3, -2, 65540, 12, 0, 0)
    (rr,) = rtcp.parse_compound(rtcp.build_receiver_report(9, [block]))
    assert rr == rtcp.ReceiverReport(9, [block])
    data = rtcp.build_receiver_report(9) + rtcp.build_bye([9, 10])
    assert rtcp.is_rtcp_bye(data)
    assert rtcp.parse_compound(data)[1] == rtcp.Bye([9, 10], "")
    assert not rtcp.is_rtcp_bye(rtcp.build_receiver_report(9))


def test_malformed() -> None:
    sr = rtcp.build_sender_report(1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="RTCP packet too short"):
        rtcp.parse_compound(sr[:3])
    with pytest.raises(ValueError, match="RTCP length exceeds packet"):
        rtcp.parse_compound(sr[:20])
    with pytest.raises(ValueError, match="RTCP version must be 2"):
        rtcp.parse_compound(b"\x40" + sr[1:])
    assert not rtcp.is_rtcp_bye(b"\x80")
