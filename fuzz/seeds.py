"""Writes the seed corpora under fuzz/corpus/: ``python fuzz/seeds.py``.

Seeds are small valid inputs of each parser, written here rather than
captured: requests and responses as FFmpeg, GStreamer, VLC and live555 send
them (headers typed from their documented behaviour, no captured traffic),
the simulator's SDP (rmfproxy/sim/camera.py) and packets from its encoder,
Digest exchanges in the shapes those clients and camera servers use. Run it
again after changing it; it replaces the generated files and leaves other
files (inputs added from a fuzzing run) alone.
"""

from __future__ import annotations

import hashlib
import random
import struct
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.targets import auth_server
from rmfproxy.rtp import h264, h265, rtcp
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtsp.auth import DigestClient, DigestServer, parse_challenges
from rmfproxy.sim.camera import SimCamera
from rmfproxy.sim.encoder import EncodedClip, encode_clip

CORPUS = Path(__file__).resolve().parent / "corpus"
URL = "rtsp://127.0.0.1:8554/cam"


def crlf(*lines: str, body: bytes = b"") -> bytes:
    """A message head from lines, CRLF-terminated, then ``body``."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def clips() -> dict[str, EncodedClip]:
    """Tiny H.264 and H.265 clips from the simulator's encoder."""
    return {
        c: encode_clip(c, width=64, height=64, fps=5, gop=2, seconds=0.4, label="s")
        for c in ("h264", "h265")
    }


def sim_sdps(cl: dict[str, EncodedClip]) -> dict[str, bytes]:
    """The simulator's SDPs (H.264 with audio, H.265 without)."""
    out = {}
    for codec, clip in cl.items():
        cam = SimCamera("cam1", clip, rng=random.Random(7), audio=codec == "h264")
        out[f"sim-{codec}"] = cam.sdp().serialize().encode()
    return out


GST_SDP = (
    "v=0\r\n"
    "o=- 1188340656180883 1 IN IP4 127.0.0.1\r\n"
    "s=Session streamed with GStreamer\r\n"
    "i=rtsp-server\r\n"
    "t=0 0\r\n"
    "a=tool:GStreamer\r\n"
    "a=type:broadcast\r\n"
    "a=range:npt=now-\r\n"
    "a=control:rtsp://127.0.0.1:8554/test\r\n"
    "m=video 0 RTP/AVP 96\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "b=AS:2000\r\n"
    "a=rtpmap:96 H264/90000\r\n"
    "a=framerate:25\r\n"
    "a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LAHtkDxWhAAAADAEAAAAwDxYuS,aMuMsg==;"
    "profile-level-id=42c01e;level-asymmetry-allowed=1\r\n"
    "a=control:rtsp://127.0.0.1:8554/test/stream=0\r\n"
    "a=ts-refclk:local\r\n"
    "a=mediaclk:sender\r\n"
    "m=audio 0 RTP/AVP 97\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=rtpmap:97 MPEG4-GENERIC/48000/2\r\n"
    "a=fmtp:97 streamtype=5;profile-level-id=2;mode=AAC-hbr;config=1190;sizelength=13;"
    "indexlength=3;indexdeltalength=3\r\n"
    "a=control:rtsp://127.0.0.1:8554/test/stream=1\r\n"
)

CAMERA_SDP = (  # the shape many IP cameras (live555-based servers among them) answer with
    "v=0\n"
    "o=- 1109162014219182 0 IN IP4 0.0.0.0\n"
    "s=Media Presentation\n"
    "e=NONE\n"
    "b=AS:5050\n"
    "t=0 0\n"
    "a=control:rtsp://10.0.0.5:554/Streaming/Channels/101/?transportmode=unicast\n"
    "m=video 0 RTP/AVP 96\n"
    "c=IN IP4 0.0.0.0\n"
    "b=AS:5000\n"
    "a=recvonly\n"
    "a=x-dimensions:1920,1080\n"
    "a=control:rtsp://10.0.0.5:554/Streaming/Channels/101/trackID=1?transportmode=unicast\n"
    "a=rtpmap:96 H265/90000\n"
    "a=fmtp:96 sprop-vps=QAEMAf//AWAAAAMAAAMAAAMAAAMAlqwJ;sprop-sps=QgEBAWAAAAMAAAMAAAMAAAMAlqAD"
    "wIAQ5Y2uSTL8AQ==;sprop-pps=RAHA8vA8kAA=\n"
    "a=Media_header:MEDIAINFO=494D4B48010300000400050000000000000000000000000000000000;\n"
    "a=appversion:1.0\n"
)


def rtsp_stream(sdp: bytes) -> dict[str, bytes]:
    """Requests and responses on one connection, with interleaved frames between them."""
    frame = b"$\x00\x00\x10" + rtp.build(96, 1, 2, 3, b"\x65\x88\x84\x00")
    rr = rtcp.build_receiver_report(0x1234)
    return {
        "ffmpeg-options": crlf(f"OPTIONS {URL} RTSP/1.0", "CSeq: 1", "User-Agent: Lavf60.16.100"),
        "ffmpeg-describe": crlf(
            f"DESCRIBE {URL} RTSP/1.0",
            "Accept: application/sdp",
            "CSeq: 2",
            "User-Agent: Lavf60.16.100",
        ),
        "gst-setup": crlf(
            f"SETUP {URL}/trackID=0 RTSP/1.0",
            "CSeq: 3",
            "User-Agent: GStreamer/1.22.0",
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
            "Date: Thu, 26 Nov 2026 08:00:00 GMT",
        ),
        "vlc-setup-udp": crlf(
            f"SETUP {URL}/trackID=0 RTSP/1.0",
            "CSeq: 4",
            "User-Agent: LibVLC/3.0.18 (LIVE555 Streaming Media v2022.12.01)",
            "Transport: RTP/AVP;unicast;client_port=50000-50001",
        ),
        "play-then-frames": crlf(
            f"PLAY {URL}/ RTSP/1.0",
            "CSeq: 5",
            "Session: 8f3a9c2e",
            "Range: npt=0.000-",
        )
        + frame
        + b"$\x01"
        + struct.pack(">H", len(rr))
        + rr
        + crlf(f"GET_PARAMETER {URL}/ RTSP/1.0", "CSeq: 6", "Session: 8f3a9c2e"),
        "teardown": crlf(f"TEARDOWN {URL}/ RTSP/1.0", "CSeq: 7", "Session: 8f3a9c2e"),
        "options-star-lf-only": b"OPTIONS * RTSP/1.0\nCSeq: 1\n\n",
        "response-describe": crlf(
            "RTSP/1.0 200 OK",
            "CSeq: 2",
            f"Content-Base: {URL}/",
            "Content-Type: application/sdp",
            f"Content-Length: {len(sdp)}",
            body=sdp,
        ),
        "response-401": crlf(
            "RTSP/1.0 401 Unauthorized",
            "CSeq: 2",
            'WWW-Authenticate: Digest realm="IP Camera(12345)", nonce="6b2c0f0a1d", stale="FALSE"',
            'WWW-Authenticate: Basic realm="IP Camera(12345)"',
        ),
        "response-setup-frames": crlf(
            "RTSP/1.0 200 OK",
            "CSeq: 3",
            'Transport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=1A2B3C4D;mode="play"',
            "Session: 12345678;timeout=60",
        )
        + frame
        + frame,
        "response-play-rtpinfo": crlf(
            "RTSP/1.0 200 OK",
            "CSeq: 5",
            "Session: 12345678",
            f"RTP-Info: url={URL}/trackID=0;seq=4242;rtptime=123456789",
            "Range: npt=now-",
        ),
        "announce-body": crlf(
            f"ANNOUNCE {URL} RTSP/1.0",
            "CSeq: 2",
            "Content-Type: application/sdp",
            f"Content-Length: {len(GST_SDP)}",
            body=GST_SDP.encode(),
        ),
        "folded-header": crlf(
            f"OPTIONS {URL} RTSP/1.0", "CSeq: 9", "User-Agent: old", " client", "\tversion 1"
        ),
        "garbage-then-request": b"\x00\xff garbage\r\n"
        + crlf(f"OPTIONS {URL} RTSP/1.0", "CSeq: 10"),
        "server-request": crlf("OPTIONS * RTSP/1.0", "CSeq: 1", "Session: 12345678"),
    }


RTSP_HEADERS = {
    "transport-tcp": "Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
    "transport-udp": "Transport: RTP/AVP;unicast;client_port=50000-50001;server_port=6970-6971;"
    "ssrc=1A2B3C4D;mode=play",
    "transport-alts": "Transport: RTP/AVP/TCP;unicast;interleaved=2-3,RTP/AVP;unicast;"
    'client_port=5000-5001;mode="PLAY"',
    "transport-multicast": "Transport: RTP/AVP;multicast;destination=239.0.0.1;ttl=16;"
    "port=5000-5001;source=10.0.0.5",
    "session": "Session: 8f3a9c2e;timeout=60",
    "session-bare": "Session: 4D5E6F70",
    "range-npt": "Range: npt=0.000-",
    "range-clock": "Range: clock=20261126T080000Z-20261126T090000.5Z;time=20261126T080000Z",
    "rtp-info": "RTP-Info: url=rtsp://127.0.0.1:8554/cam/trackID=0;seq=4242;rtptime=123456789,"
    "url=rtsp://127.0.0.1:8554/cam/trackID=1;seq=1;rtptime=0",
    "cseq": "CSeq: 42",
    "public": "Public: OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER",
}

AUTH_CLIENT = {
    "digest-camera": 'Digest realm="IP Camera(12345)", nonce="6b2c0f0a1d7e", stale="FALSE"',
    "digest-live555": 'Digest realm="LIVE555 Streaming Media", '
    'nonce="a8c7e3b1d6f4e2a0c9b8d7e6f5a4b3c2"',
    "digest-qop": 'Digest realm="rtsp", qop="auth", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41", algorithm=MD5',
    "digest-sha256": 'Digest realm="rtsp", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'algorithm=SHA-256, qop="auth,auth-int"',
    "digest-sess": 'Digest realm="r", nonce="abc", algorithm=MD5-sess, qop=auth',
    "basic": 'Basic realm="IP Camera"',
    "two-headers": 'Digest realm="cam", nonce="1234"\nBasic realm="cam"',
    "one-header-two": 'Digest realm="cam", nonce="1234", Basic realm="cam"',
    "escaped": 'Digest realm="a \\"quoted\\" realm", nonce="n\\\\1"',
}


def auth_server_seeds() -> dict[str, bytes]:
    """Valid answers to this target's server at its fixed time, in several clients' shapes."""
    server = DigestServer(auth_server.REALM, auth_server.SECRET)
    value = server.challenge(auth_server.NOW)
    ch = parse_challenges([value])[0]
    out: dict[str, bytes] = {}
    c = DigestClient("admin", auth_server.USERS["admin"])
    out["qop-auth"] = c.authorization(ch, "DESCRIBE", URL, cnonce="0a4f113b").encode()
    no_qop = type(ch)(ch.scheme, ch.realm, ch.nonce, None, "MD5", [], False)
    out["ffmpeg-no-qop"] = c.authorization(no_qop, "DESCRIBE", URL).encode()
    sha = type(ch)(ch.scheme, ch.realm, ch.nonce, "opq", "SHA-256", ["auth"], False)
    out["sha256-opaque"] = c.authorization(sha, "DESCRIBE", URL, cnonce="ff").encode()
    sess = type(ch)(ch.scheme, ch.realm, ch.nonce, None, "MD5-sess", ["auth"], False)
    out["md5-sess"] = c.authorization(sess, "DESCRIBE", URL, cnonce="abcdef").encode()
    old = parse_challenges([server.challenge(auth_server.NOW - 3600)])[0]
    stale = type(ch)(ch.scheme, ch.realm, old.nonce, None, "MD5", ["auth"], False)
    out["stale"] = c.authorization(stale, "DESCRIBE", URL, cnonce="1").encode()
    out["basic"] = b"Basic YWRtaW46MTIzNDU="
    out["wrong-user"] = out["qop-auth"].replace(b'username="admin"', b'username="nobody"')
    return out


def rtp_packets(cl: dict[str, EncodedClip]) -> dict[str, bytes]:
    """RTP packets: encoder output, CSRCs, a header extension, padding, audio."""
    sps = cl["h264"].sps
    out = {
        "h264-sps": rtp.build(96, 100, 3000, 0xDEADBEEF, sps),
        "h264-fu-a-marker": rtp.build(96, 65535, 0xFFFFFFFF, 1, b"\x7c\x45" + b"\x11" * 20, True),
        "pcmu": rtp.build(0, 7, 160, 2, b"\xff" * 40),
        "h265-ap": rtp.build(97, 8, 9, 10, b"\x60\x01\x00\x03\x40\x01\x0c\x00\x03\x42\x01\x01"),
    }
    csrc = bytes([0x82, 0x60]) + struct.pack(">HII", 1, 2, 3) + struct.pack(">II", 4, 5)
    out["csrc"] = csrc + b"\x65\x00"
    ext = bytes([0x90, 0xE0]) + struct.pack(">HII", 1, 2, 3) + b"\xbe\xde\x00\x01" + b"\x10\xff\0\0"
    out["extension"] = ext + b"\x41\x9a"
    out["padding"] = bytes([0xA0, 0x60]) + struct.pack(">HII", 1, 2, 3) + b"\x41\x9a\x00\x00\x03"
    return out


def rtcp_packets() -> dict[str, bytes]:
    """SR+SDES, RR with blocks, BYE with a reason, APP, a compound of all."""
    block = rtcp.ReportBlock(0xCAFE, 12, -3, 70000, 45, 0x12345678, 65536)
    sr = rtcp.build_sender_report(0xBEEF, rtcp.ntp_from_unix(1.79e9), 90000, 10, 12000, "cam@sim")
    rr = rtcp.build_receiver_report(0xF00D, [block, block], "viewer")
    reason = b"\x08shutdown"
    bye = struct.pack(">BBHI", 0x81, rtcp.BYE, 3, 0xBEEF) + reason + b"\x00" * 3
    app = struct.pack(">BBHI4s", 0x80, 204, 3, 0xBEEF, b"TEST") + b"\x00\x00\x00\x01"
    return {"sr-sdes": sr, "rr-blocks": rr, "bye-reason": bye, "app": app, "compound": sr + bye}


def nal_records(payloads: list[bytes], markers: list[bool], codec_byte: int) -> bytes:
    """The nal target's layout: a codec/MTU byte, then ``len|marker`` + payload records."""
    out = bytearray([codec_byte])
    for p, m in zip(payloads, markers, strict=True):
        assert len(p) < 127
        out.append((0x80 if m else 0) | len(p))
        out += p
    return bytes(out)


def nal_seeds(cl: dict[str, EncodedClip]) -> dict[str, bytes]:
    """Packetized access units of both clips (slices cut short to keep seeds small)."""
    out = {}
    for codec, mod, codec_bit in (("h264", h264, 0), ("h265", h265, 1)):
        clip = cl[codec]
        for i, au in enumerate(clip.access_units[:2]):
            nals = [n[:200] for n in au.nals]
            payloads = mod.packetize(nals, mtu=100)
            markers = [j == len(payloads) - 1 for j in range(len(payloads))]
            out[f"{codec}-au{i}{'-key' if au.keyframe else ''}"] = nal_records(
                payloads, markers, codec_bit | (20 << 1)
            )
    return out


def write(target: str, seeds: dict[str, bytes]) -> None:
    """Replace this script's seeds of ``target`` (named ``seed-*``)."""
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        old.unlink()
    for name, data in seeds.items():
        (d / f"seed-{name}").write_bytes(data)


def main() -> None:
    """Write every target's seeds."""
    cl = clips()
    sdps = sim_sdps(cl) | {"gstreamer": GST_SDP.encode(), "camera-lf": CAMERA_SDP.encode()}
    write("rtsp_stream", rtsp_stream(sdps["sim-h264"]))
    write("rtsp_headers", {k: v.encode() for k, v in RTSP_HEADERS.items()})
    write("sdp", sdps)
    write("auth_client", {k: v.encode() for k, v in AUTH_CLIENT.items()})
    write("auth_server", auth_server_seeds())
    write("rtp", rtp_packets(cl))
    write("rtcp", rtcp_packets())
    write("nal", nal_seeds(cl))
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    digest = hashlib.sha1(
        b"".join(p.read_bytes() for p in sorted(CORPUS.rglob("*")) if p.is_file())
    )
    print(f"corpus: {total} bytes, sha1 {digest.hexdigest()[:12]}")


if __name__ == "__main__":
    main()
