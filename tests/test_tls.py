"""RTSPS (RTSP over TLS): configuration errors, the TLS listener's protocol floor, its
interleaved-only media, the URLs it writes, and certificate reloads.

Real sockets on 127.0.0.1 port 0, a PKI made with ``openssl`` at test time
(tests/tls_support.py); the media path is covered end to end in test_e2e_tls.py.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog

from rmfproxy.app import ListenError, Proxy
from rmfproxy.config import ConfigError, parse_config
from rmfproxy.manage.revisions import restart_only_changes
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.limits import ServeLimits
from rmfproxy.serve.server import RtspServer
from rmfproxy.serve.stream import MediaSink, TrackStart
from rmfproxy.tls import ServerTls, TlsFileError, client_context, server_context
from tests.support import rtsp_exchange
from tests.tls_support import Pki, cert_fingerprint, make_pki, peer_fingerprint

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
    "a=control:*\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    "a=control:trackID=0\r\n"
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


# configuration ----------------------------------------------------------------------


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return dict(info.value.problems)


def doc(rtsp: dict[str, Any] | None = None, **source: Any) -> dict[str, Any]:
    return {
        "rtsp": rtsp or {},
        "cameras": {"cam": {"sources": [{"url": "rtsps://10.0.0.1/cam", **source}]}},
    }


def test_config_accepts_tls_listener_and_rtsps_sources(pki: Pki) -> None:
    tls = {"listen": "127.0.0.1:0", "cert_file": str(pki.cert), "key_file": str(pki.key)}
    cfg = parse_config(doc({"listen": None, "tls": tls}, tls_ca_file=str(pki.ca)))
    assert cfg.rtsp.listen is None and cfg.rtsp.tls is not None
    assert cfg.rtsp.tls.cert_file == pki.cert
    assert cfg.cameras["cam"].sources[0].tls_ca_file == pki.ca
    defaults = parse_config(doc({"tls": {"cert_file": str(pki.cert), "key_file": str(pki.key)}}))
    assert defaults.rtsp.tls is not None and defaults.rtsp.tls.listen == "127.0.0.1:8322"
    assert defaults.rtsp.listen == "127.0.0.1:8554"
    assert defaults.cameras["cam"].sources[0].tls_verify is True


def test_config_errors_name_the_tls_field(pki: Pki, tmp_path: Path) -> None:
    other_cert, other_key = pki.issue("other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text(
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    )

    def tls(cert: Path, key: Path) -> dict[str, Any]:
        return {"tls": {"cert_file": str(cert), "key_file": str(key)}}

    missing = problems(doc(tls(tmp_path / "nope.pem", pki.key)))
    assert "nope.pem" in missing["rtsp.tls.cert_file"]
    assert "No such file" in missing["rtsp.tls.cert_file"]
    mismatch = problems(doc(tls(pki.cert, other_key)))
    assert "does not match the certificate" in mismatch["rtsp.tls.key_file"]
    assert "no PEM private key" in problems(doc(tls(pki.cert, pki.cert)))["rtsp.tls.key_file"]
    assert "no PEM certificate" in problems(doc(tls(pki.key, pki.key)))["rtsp.tls.cert_file"]
    assert (
        "not a valid PEM certificate" in problems(doc(tls(garbage, pki.key)))["rtsp.tls.cert_file"]
    )
    unreadable = problems(doc(tls(tmp_path, pki.key)))  # a directory
    assert "cannot read" in unreadable["rtsp.tls.cert_file"]
    ca = problems(doc(tls_ca_file=str(tmp_path / "missing-ca.pem")))
    assert "missing-ca.pem" in ca["cameras.cam.sources.0.tls_ca_file"]
    not_ca = problems(doc(tls_ca_file=str(pki.key)))
    assert "no PEM CA certificate" in not_ca["cameras.cam.sources.0.tls_ca_file"]
    # the key's content never appears in an error
    key_text = "".join(pki.key.read_text().splitlines()[1:-1])
    assert all(key_text[:20] not in msg for msg in {**mismatch, **missing}.values())
    assert other_cert.exists()


def test_config_refuses_what_would_not_be_encrypted_or_does_nothing() -> None:
    udp = problems(doc(transport="udp"))
    assert "unencrypted" in udp["cameras.cam.sources.0"]
    plain = {"cameras": {"cam": {"sources": [{"url": "rtsp://10.0.0.1/c", "tls_verify": False}]}}}
    assert "rtsps:// URLs only" in problems(plain)["cameras.cam.sources.0"]
    both = problems(doc(tls_verify=False, tls_ca_file="/x.pem"))
    assert "no effect" in both["cameras.cam.sources.0"]
    assert "no listener" in problems(doc({"listen": None}))["rtsp"]


def test_config_refuses_listeners_on_one_port(pki: Pki) -> None:
    tls = {"listen": "0.0.0.0:8554", "cert_file": str(pki.cert), "key_file": str(pki.key)}
    clash = problems(doc({"listen": "127.0.0.1:8554", "tls": tls}))
    assert "takes the TCP port of rtsp.listen" in clash["rtsp.tls.listen"]


def test_client_context_verifies_by_default(pki: Pki) -> None:
    ctx = client_context(pki.ca)
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    loose = client_context(verify=False)
    assert loose.verify_mode is ssl.CERT_NONE and not loose.check_hostname
    with pytest.raises(TlsFileError) as info:
        client_context(pki.root / "nope.pem")
    assert info.value.field == "ca_file"


# the TLS listener ---------------------------------------------------------------------


class StillStream:
    """A path with an SDP and nothing to send (the protocol exchange is what is tested)."""

    def __init__(self) -> None:
        self.attached: list[MediaSink] = []

    def sdp(self) -> SessionDescription:
        return SessionDescription.parse(SDP)

    def ssrc(self, track: int) -> int:
        return 0x5EC0DE

    def start_points(self) -> dict[int, TrackStart]:
        return {0: TrackStart(1000, 90000)}

    def attach(self, sink: MediaSink) -> None:
        self.attached.append(sink)

    def detach(self, sink: MediaSink) -> None:
        if sink in self.attached:
            self.attached.remove(sink)


@asynccontextmanager
async def tls_server(pki: Pki, **kw: Any) -> AsyncIterator[RtspServer]:
    stream = StillStream()
    server = RtspServer({"cam": stream}.get, tls=ServerTls(pki.cert, pki.key), **kw)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def open_tls(
    port: int, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 5)


def blocking_handshake(port: int, ctx: ssl.SSLContext) -> None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1"),
    ):
        pass


def legacy_client(maximum: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers TLS 1.0 up to ``maximum`` (SECLEVEL=0: OpenSSL 3 would not
    offer the old versions' SHA-1 signatures otherwise)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are deprecated
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = maximum
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


async def test_tls_1_1_client_is_refused_by_the_server(pki: Pki) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls11 = legacy_client(ssl.TLSVersion.TLSv1_1)
    # The client really offers TLS 1.1: a server that allows it gets a TLS 1.1 session.
    loose = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    loose.load_cert_chain(pki.cert, pki.key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loose.minimum_version = ssl.TLSVersion.TLSv1
    loose.set_ciphers("ALL:@SECLEVEL=0")
    control = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=loose)
    try:
        _, w = await open_tls(control.sockets[0].getsockname()[1], tls11)
        assert w.get_extra_info("ssl_object").version() == "TLSv1.1"
        w.close()
    finally:
        control.close()
        await control.wait_closed()
    async with tls_server(pki) as server:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await open_tls(server.tls_port, tls11)
        # ... while TLS 1.2 from the same client gets through.
        _, w = await open_tls(server.tls_port, legacy_client(ssl.TLSVersion.TLSv1_2))
        assert w.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        w.close()
    ctx = server_context(pki.cert, pki.key)
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION


async def test_failed_handshakes_are_logged_with_their_reason_and_counted(pki: Pki) -> None:
    """asyncio reports a failed TLS handshake only in debug mode: the listener runs them
    itself, so a plain client on the TLS port, an untrusting client, an old TLS version
    and a silent one are each a warning with the client's address and why, and a count."""
    limits = ServeLimits(request_timeout=0.3)
    with structlog.testing.capture_logs() as logs:
        async with tls_server(pki, limits=limits) as server:
            port = server.tls_port
            _, w = await asyncio.open_connection("127.0.0.1", port)  # plain RTSP
            w.write(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                tls11 = legacy_client(ssl.TLSVersion.TLSv1_1)
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await open_tls(port, tls11)
            # A client that does not trust the test CA; a socket client, which sends its
            # alert before it closes (asyncio's closes without one).
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.to_thread(blocking_handshake, port, ssl.create_default_context())
            silent = socket.create_connection(("127.0.0.1", port))
            async with asyncio.timeout(5):
                while server.tls_handshake_failures < 4:
                    await asyncio.sleep(0.02)
            # Still serving: a good client gets through, and nothing of it is counted.
            _, good = await open_tls(port, client_context(pki.ca))
            good.close()
            silent.close()
            w.close()
            assert server.tls_handshake_failures == 4
    failed = [e for e in logs if e["event"] == "rtsp.tls_handshake_failed"]
    assert all(e["log_level"] == "warning" and e["client"] == "127.0.0.1" for e in failed)
    assert {e["reason"] for e in failed} == {
        "wrong_version_number",  # the plain request
        "unsupported_protocol",  # TLS 1.1
        "tlsv1_alert_unknown_ca",  # the client's alert
        "timeout",  # the silent client, after request_timeout
    }, failed


async def test_udp_setup_over_tls_is_461_and_urls_say_rtsps(pki: Pki) -> None:
    async with tls_server(pki) as server:
        port = server.tls_port
        conn = await open_tls(port, client_context(pki.ca))
        try:
            # The client names rtsp:// on the TLS listener: what comes back says rtsps://.
            status, headers, body = await rtsp_exchange(
                port,
                f"DESCRIBE rtsp://127.0.0.1:{port}/cam RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode(),
                conn,
            )
            assert status == 200 and b"H264/90000" in body
            assert headers["content-base"] == f"rtsps://127.0.0.1:{port}/cam/"
            url = f"rtsps://127.0.0.1:{port}/cam/trackID=0"
            udp = "Transport: RTP/AVP;unicast;client_port=40000-40001\r\n"
            status, headers, _ = await rtsp_exchange(
                port, f"SETUP {url} RTSP/1.0\r\nCSeq: 2\r\n{udp}\r\n".encode(), conn
            )
            assert status == 461
            assert "session" not in headers and not server.sessions
            tcp = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
            status, headers, _ = await rtsp_exchange(
                port, f"SETUP {url} RTSP/1.0\r\nCSeq: 3\r\n{tcp}\r\n".encode(), conn
            )
            assert status == 200 and "interleaved=0-1" in headers["transport"]
            session = headers["session"].split(";")[0]
            play = f"PLAY rtsp://127.0.0.1:{port}/cam RTSP/1.0\r\nCSeq: 4\r\nSession: {session}\r\n"
            status, headers, _ = await rtsp_exchange(port, f"{play}\r\n".encode(), conn)
            assert status == 200
            assert headers["rtp-info"].startswith(f"url=rtsps://127.0.0.1:{port}/cam/trackID=0;")
        finally:
            conn[1].close()
        # The same UDP SETUP on the plain listener is served: the 461 is TLS's own.
        url = f"rtsp://127.0.0.1:{server.port}/cam/trackID=0"
        status, headers, _ = await rtsp_exchange(
            server.port, f"SETUP {url} RTSP/1.0\r\nCSeq: 1\r\n{udp}\r\n".encode()
        )
        assert status == 200 and "server_port=" in headers["transport"]


async def test_tls_only_server_has_no_plain_listener(pki: Pki) -> None:
    async with tls_server(pki, port=None) as server:
        assert server.url("cam") == f"rtsps://127.0.0.1:{server.tls_port}/cam"
        assert server.udp_ports is None
        _, w = await open_tls(server.tls_port, client_context(pki.ca))
        w.close()


async def test_reload_swaps_the_certificate_for_new_handshakes_only(pki: Pki) -> None:
    async with tls_server(pki) as server:
        assert server.tls is not None
        first = await open_tls(server.tls_port, client_context(pki.ca))
        assert peer_fingerprint(first[1]) == cert_fingerprint(pki.cert)
        new_cert, new_key = pki.issue("renewed")
        new_cert.replace(pki.cert)  # renewed in place, as certbot and friends do
        new_key.replace(pki.key)
        renewed = cert_fingerprint(pki.cert)
        assert server.tls.reload()
        assert server.tls.fingerprint == renewed
        second = await open_tls(server.tls_port, client_context(pki.ca))
        assert peer_fingerprint(second[1]) == renewed
        # a bad pair (key of another certificate) is refused: the renewed one stays
        _, stray_key = pki.issue("stray")
        stray_key.replace(pki.key)
        with structlog.testing.capture_logs() as logs:
            assert not server.tls.reload()
        failed = [e for e in logs if e["event"] == "tls.reload_failed"]
        assert failed and failed[0]["field"] == "rtsp.tls.key_file"
        assert failed[0]["log_level"] == "error"
        third = await open_tls(server.tls_port, client_context(pki.ca))
        assert peer_fingerprint(third[1]) == renewed == server.tls.fingerprint
        # the connection made before any reload still talks to the server
        status, _, _ = await rtsp_exchange(
            server.tls_port, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", first
        )
        assert status == 200
        for _, w in (first, second, third):
            w.close()


def test_certificate_paths_change_live_the_tls_listener_needs_a_restart(pki: Pki) -> None:
    renewed_cert, renewed_key = pki.issue("renewed")

    def cfg(cert: Path, key: Path, listen: str = "127.0.0.1:8322") -> Any:
        tls = {"listen": listen, "cert_file": str(cert), "key_file": str(key)}
        return parse_config(doc({"tls": tls}))

    old = cfg(pki.cert, pki.key)
    assert restart_only_changes(old, cfg(renewed_cert, renewed_key)) == []
    assert restart_only_changes(old, cfg(pki.cert, pki.key, "127.0.0.1:9322")) == [
        "rtsp.tls.listen"
    ]
    assert restart_only_changes(old, parse_config(doc())) == ["rtsp.tls"]


def test_sources_with_one_ca_share_one_client_context(pki: Pki) -> None:
    """Loading the system's CAs costs ~40 ms and ~1 MB per context: 200 rtsps cameras
    must not build 400 of them on the event loop."""
    sources = [
        {"url": "rtsps://10.0.0.1/a"},
        {"url": "rtsps://10.0.0.2/a"},
        {"url": "rtsps://10.0.0.3/a", "tls_ca_file": str(pki.ca)},
        {"url": "rtsps://10.0.0.4/a", "tls_ca_file": str(pki.ca)},
        {"url": "rtsps://10.0.0.5/a", "tls_verify": False},
        {"url": "rtsp://10.0.0.6/a"},
    ]
    cfg = parse_config({"api": {"enabled": False}, "cameras": {"a": {"sources": sources}}})
    proxy = Proxy(cfg)
    ctx = [proxy._source_tls(src) for src in cfg.cameras["a"].sources]
    assert ctx[0] is ctx[1] and ctx[2] is ctx[3]
    assert len({id(c) for c in ctx[:5]}) == 3 and ctx[5] is None
    assert ctx[0] is not None and ctx[0].verify_mode is ssl.CERT_REQUIRED
    assert ctx[4] is not None and ctx[4].verify_mode is ssl.CERT_NONE


async def test_busy_tls_port_names_its_field_and_leaves_nothing_bound(pki: Pki) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        tls = {"listen": f"127.0.0.1:{port}", "cert_file": str(pki.cert), "key_file": str(pki.key)}
        cfg = parse_config(
            {
                "rtsp": {"listen": "127.0.0.1:0", "tls": tls},
                "api": {"enabled": False},
                "cameras": {"a": {"sources": [{"url": "rtsp://127.0.0.1:9/a"}]}},
            }
        )
        proxy = Proxy(cfg)
        with pytest.raises(ListenError) as info:
            await proxy.start()
        assert info.value.field == "rtsp.tls.listen"
        assert "Address already in use" in str(info.value)
        assert proxy.server._server is not None and not proxy.server._server.is_serving()
        assert proxy.server.udp_rtp is None  # the UDP pair was released too


def test_world_readable_key_is_served_with_a_warning(pki: Pki) -> None:
    pki.key.chmod(0o600)
    with structlog.testing.capture_logs() as logs:
        ServerTls(pki.cert, pki.key)
    assert not [e for e in logs if e["event"] == "tls.key_file_world_readable"]
    pki.key.chmod(0o644)
    with structlog.testing.capture_logs() as logs:
        tls = ServerTls(pki.cert, pki.key)
    warned = [e for e in logs if e["event"] == "tls.key_file_world_readable"]
    assert warned and warned[0]["log_level"] == "warning" and warned[0]["path"] == str(pki.key)
    assert tls.fingerprint == cert_fingerprint(pki.cert)
