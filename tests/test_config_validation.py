"""Configuration gaps from the hardening issue, each refused with the field named.

Regressions: a camera id given twice in YAML silently vanished; ``rtsp.listen`` equal to
``api.listen`` passed ``check`` and ``run`` died with a traceback; an odd
``rtsp.udp_rtp_port`` was accepted; a busy port gave a traceback at ``run``; the host
``999.1.1.1`` passed.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rmfproxy.app import ListenError, Proxy
from rmfproxy.config import ConfigError, load_config, parse_config

CAMERAS = {"a": {"sources": [{"url": "rtsp://127.0.0.1:1/a"}]}}
RUN_TIMEOUT = 30


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return dict(info.value.problems)


def listen_config(
    rtsp_listen: str,
    api_listen: str,
    rtsp: dict[str, Any] | None = None,
    api: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "rtsp": {"listen": rtsp_listen, **(rtsp or {})},
        "api": {"listen": api_listen, **(api or {})},
        "cameras": CAMERAS,
    }


def rmfproxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rmfproxy", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def write_config(tmp_path: Path, rtsp: str, api: str, udp_rtp_port: int = 0) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f'rtsp:\n  listen: "{rtsp}"\n  udp_rtp_port: {udp_rtp_port}\n'
        f'api:\n  listen: "{api}"\n'
        "log:\n  format: json\n"
        "cameras:\n  a:\n    sources:\n      - url: rtsp://127.0.0.1:1/a\n"
    )
    return path


# duplicate YAML keys ---------------------------------------------------------------------


def test_duplicate_camera_id_is_refused_with_path_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "cameras:\n"
        "  lobby:\n"
        "    sources: [{url: 'rtsp://127.0.0.1:8601/lobby'}]\n"
        "  gate:\n"
        "    sources: [{url: 'rtsp://127.0.0.1:8601/gate'}]\n"
        "  lobby:\n"
        "    sources: [{url: 'rtsp://127.0.0.1:8602/lobby'}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        (
            "cameras.lobby",
            "duplicate key at line 6 (first at line 2): YAML would silently keep only the last one",
        )
    ]


def test_duplicate_keys_are_found_anywhere_in_the_document(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "rtsp:\n"
        "  listen: '127.0.0.1:0'\n"
        "  listen: '127.0.0.1:1'\n"
        "cameras:\n"
        "  a:\n"
        "    sources:\n"
        "      - url: rtsp://127.0.0.1:1/a\n"
        "        name: r1\n"
        "        name: r2\n"
        "rtsp: {}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [where for where, _ in info.value.problems] == [
        "rtsp.listen",
        "cameras.a.sources.0.name",
        "rtsp",
    ]
    assert "line 3 (first at line 2)" in info.value.problems[0][1]
    assert "line 9 (first at line 8)" in info.value.problems[1][1]
    assert "line 10 (first at line 1)" in info.value.problems[2][1]


def test_keys_that_differ_in_type_or_anchors_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "x-source: &src {url: 'rtsp://127.0.0.1:1/a'}\ncameras:\n  a:\n    sources: [*src, *src]\n"
    )
    with pytest.raises(ConfigError) as info:  # x-source is unknown, but not a duplicate
        load_config(path)
    assert dict(info.value.problems) == {"x-source": "unknown field"}
    path.write_text("cameras:\n  '1': {sources: [{url: 'rtsp://h/a'}]}\n  1: {sources: []}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert not any("duplicate" in what for _, what in info.value.problems)


# rtsp.listen vs api.listen -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rtsp", "api"),
    [
        ("127.0.0.1:8554", "127.0.0.1:8554"),
        ("0.0.0.0:9100", "127.0.0.1:9100"),
        ("127.0.0.1:9100", "0.0.0.0:9100"),
        ("[::]:9100", "127.0.0.1:9100"),
        ("localhost:9100", "127.0.0.1:9100"),
        ("[::1]:9100", "[0:0::1]:9100"),
    ],
)
def test_listeners_on_one_tcp_port_are_refused_naming_both(rtsp: str, api: str) -> None:
    found = problems(listen_config(rtsp, api))
    assert list(found) == ["api.listen"]
    assert "rtsp.listen" in found["api.listen"] and rtsp in found["api.listen"]


@pytest.mark.parametrize(
    ("rtsp", "api", "enabled"),
    [
        ("127.0.0.1:0", "127.0.0.1:0", True),  # each gets its own free port
        ("127.0.0.1:8554", "127.0.0.1:9100", True),
        ("127.0.0.1:9100", "127.0.0.2:9100", True),
        ("127.0.0.1:9100", "127.0.0.1:9100", False),  # the admin listener is off
    ],
)
def test_listeners_that_do_not_collide_pass(rtsp: str, api: str, enabled: bool) -> None:
    parse_config(listen_config(rtsp, api, api={"enabled": enabled}))


def test_check_and_run_refuse_the_clash_without_a_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path, "0.0.0.0:18554", "127.0.0.1:18554")
    for command in ("check", "run"):
        done = rmfproxy(command, "--config", str(path))
        assert done.returncode == 1, (command, done.stderr)
        assert "api.listen: 127.0.0.1:18554 takes the TCP port of rtsp.listen" in done.stderr
        assert "Traceback" not in done.stderr


# udp_rtp_port ------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [8555, 1, 65535, 65536, -2])
def test_udp_rtp_port_must_be_an_even_port_with_room_for_rtcp(port: int) -> None:
    found = problems(listen_config("127.0.0.1:0", "127.0.0.1:0", rtsp={"udp_rtp_port": port}))
    assert list(found) == ["rtsp.udp_rtp_port"]
    assert "even port from 2 to 65534" in found["rtsp.udp_rtp_port"]


@pytest.mark.parametrize("port", [0, 2, 8554, 65534])
def test_udp_rtp_port_valid_values(port: int) -> None:
    cfg = parse_config(listen_config("127.0.0.1:0", "127.0.0.1:0", rtsp={"udp_rtp_port": port}))
    assert cfg.rtsp.udp_rtp_port == port


# hosts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("999.1.1.1", "not a valid IPv4 address"),
        ("1.2.3", "not a valid IPv4 address"),
        ("010.0.0.1", "not a valid IPv4 address"),
        ("::1", "must be in brackets"),
        ("[::g]", "not a valid [IPv6] address"),
        ("[::1", "not a valid [IPv6] address"),
        ("cam_1", "not a valid host name"),
        ("-cam", "not a valid host name"),
        ("a..b", "not a valid host name"),
        ("x" * 64 + ".example", "not a valid host name"),
        ("rec.123", "cannot be all digits"),
    ],
)
def test_bad_hosts_are_refused_in_listen_addresses(host: str, message: str) -> None:
    found = problems(listen_config(f"{host}:8554", "127.0.0.1:0"))
    assert message in found["rtsp.listen"], found
    found = problems(listen_config("127.0.0.1:0", f"{host}:9100"))
    assert message in found["api.listen"], found


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("999.1.1.1", "not a valid IPv4 address"),
        ("256.0.0.1:554", "not a valid IPv4 address"),
        ("cam_1", "not a valid host name"),
        ("user@rec-.example", "not a valid host name"),
    ],
)
def test_bad_hosts_are_refused_in_source_urls(host: str, message: str) -> None:
    found = problems({"cameras": {"a": {"sources": [{"url": f"rtsp://{host}/a"}]}}})
    assert message in found["cameras.a.sources.0.url"], found


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "0.0.0.0", "[::]", "[::1]", "localhost", "rec-1.site.example", "REC1."]
)
def test_good_hosts_pass(host: str) -> None:
    cfg = parse_config(
        {
            "rtsp": {"listen": f"{host}:8554"},
            "api": {"listen": f"{host}:9100"},
            "cameras": {"a": {"sources": [{"url": f"rtsp://user@{host}:554/a"}]}},
        }
    )
    assert cfg.rtsp.listen == f"{host}:8554"


# a busy port at run time -------------------------------------------------------------------


@pytest.fixture
def busy_tcp_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that this test holds (listening) for its duration."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def busy_udp_pair() -> Iterator[int]:
    """An even UDP port on 127.0.0.1 held by this test (the RTP half of a pair)."""
    held: list[socket.socket] = []
    try:
        for _ in range(64):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port % 2 == 0 and port < 65534:
                yield port
                return
        pytest.skip("no even UDP port from the kernel in 64 tries")
    finally:
        for s in held:
            s.close()


def test_run_with_a_busy_rtsp_port_says_so_in_one_line(tmp_path: Path, busy_tcp_port: int) -> None:
    path = write_config(tmp_path, f"127.0.0.1:{busy_tcp_port}", "127.0.0.1:0")
    done = rmfproxy("run", "--config", str(path))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        f"rmfproxy: cannot listen on 127.0.0.1:{busy_tcp_port} (rtsp.listen): "
        "Address already in use\n"
    ) in done.stderr


async def test_busy_api_port_is_named_and_nothing_stays_bound(busy_tcp_port: int) -> None:
    proxy = Proxy(parse_config(listen_config("127.0.0.1:0", f"127.0.0.1:{busy_tcp_port}")))
    try:
        with pytest.raises(ListenError) as info:
            await proxy.start()
        assert info.value.field == "api.listen"
        assert str(info.value) == (
            f"cannot listen on 127.0.0.1:{busy_tcp_port} (api.listen): Address already in use"
        )
        # The RTSP listener bound before it was closed again, and no source was started.
        assert proxy.server._server is not None and not proxy.server._server.is_serving()
        assert not any(feed._tasks for feed in proxy.feeds.values())
    finally:
        await proxy.stop()


async def test_busy_fixed_udp_pair_is_named(busy_udp_pair: int) -> None:
    cfg = parse_config(
        listen_config("127.0.0.1:0", "127.0.0.1:0", rtsp={"udp_rtp_port": busy_udp_pair})
    )
    proxy = Proxy(cfg)
    try:
        with pytest.raises(ListenError) as info:
            await proxy.start()
        assert info.value.field == "rtsp.udp_rtp_port"
        assert f"127.0.0.1:{busy_udp_pair}-{busy_udp_pair + 1}/udp" in str(info.value)
    finally:
        await proxy.stop()
