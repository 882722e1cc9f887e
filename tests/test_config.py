"""Configuration: the minimal shape loads, every bad field is named, no inline secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmfproxy.cli import main
from rmfproxy.config import ConfigError, load_config, parse_config

MINIMAL = """\
rtsp:
  listen: "127.0.0.1:8554"
cameras:
  lobby:
    sources:                               # priority order, first = primary
      - url: "rtsp://127.0.0.1:8601/lobby"
      - url: "rtsp://127.0.0.1:8602/lobby"
"""


def test_minimal_shape_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    cfg = load_config(path)
    assert list(cfg.cameras) == ["lobby"]
    assert [s.url for s in cfg.cameras["lobby"].sources] == [
        "rtsp://127.0.0.1:8601/lobby",
        "rtsp://127.0.0.1:8602/lobby",
    ]
    assert cfg.cameras["lobby"].source_name(1) == "127.0.0.1:8602"
    assert cfg.rtsp.session_timeout == 60


def test_example_config_is_valid() -> None:
    cfg = load_config(Path(__file__).parent.parent / "config" / "example.yaml")
    assert set(cfg.cameras) == {"lobby", "gate"}


def problems(data: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return dict(info.value.problems)


def test_every_problem_names_its_field() -> None:
    found = problems(
        {
            "rtsp": {"listen": "8554", "bogus": 1},
            "cameras": {
                "a": {"sources": [{"url": "http://x/y"}]},
                "b": {"sources": []},
                "c": {"sources": [{"url": "rtsp://h/c"}], "stall_timeout": -1},
            },
        }
    )
    assert found["rtsp.listen"].startswith("must be HOST:PORT")
    assert found["rtsp.bogus"] == "unknown field"
    assert found["cameras.a.sources.0.url"] == "must be an rtsp:// URL with a host"
    assert "at least 1" in found["cameras.b.sources"]
    assert "greater than 0" in found["cameras.c.stall_timeout"]


def test_no_cameras_and_not_a_mapping() -> None:
    assert "cameras" in problems({"rtsp": {}})
    assert "(top level)" in problems(["not", "a", "mapping"])


def test_inline_secrets_refused_and_never_echoed() -> None:
    found = problems(
        {
            "cameras": {
                "a": {
                    "sources": [
                        {"url": "rtsp://127.0.0.1/a", "password": "hunter2-secret"},
                        {"url": "rtsp://admin:hunter2-secret@127.0.0.1/a"},
                    ]
                }
            }
        }
    )
    assert "an inline password is not accepted" in found["cameras.a.sources.0"]
    assert "URL carries a password" in found["cameras.a.sources.1.url"]
    assert "hunter2" not in repr(found)


def test_password_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    monkeypatch.setenv("RMF_TEST_PW", "from-env")
    cfg = parse_config(
        {
            "rtsp": {"users": [{"name": "op", "password_file": str(secret_file)}]},
            "cameras": {
                "a": {
                    "sources": [
                        {
                            "url": "rtsp://127.0.0.1/a",
                            "username": "u",
                            "password_env": "RMF_TEST_PW",
                        }
                    ]
                }
            },
        }
    )
    src_pw = cfg.cameras["a"].sources[0].resolve_password()
    user_pw = cfg.rtsp.users[0].resolve_password()
    assert src_pw is not None and src_pw.value == "from-env"
    assert user_pw is not None and user_pw.value == "from-file"
    assert "from-env" not in repr(src_pw) and str(src_pw) == "***"
    monkeypatch.delenv("RMF_TEST_PW")
    assert (
        "RMF_TEST_PW is not set"
        in problems(
            {
                "cameras": {
                    "a": {"sources": [{"url": "rtsp://127.0.0.1/a", "password_env": "RMF_TEST_PW"}]}
                }
            }
        )["cameras.a.sources.0"]
    )


def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("cameras:\n  a: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    where, what = info.value.problems[0]
    assert where.startswith(str(path) + ":") and "YAML syntax" in what


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    assert main(["check", "--config", str(good)]) == 0
    assert "ok: 1 camera(s), 2 source(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras:\n  lobby:\n    sources:\n      - url: ftp://x\n")
    assert main(["check", "--config", str(bad)]) == 1
    assert "cameras.lobby.sources.0.url: must be an rtsp:// URL" in capsys.readouterr().err


API_CAMERAS = {"a": {"sources": [{"url": "rtsp://127.0.0.1:1/a"}]}}


def test_api_token_comes_from_env_or_file_never_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = problems({"api": {"token": "inline-token-0123456789"}, "cameras": API_CAMERAS})
    assert "inline token is not accepted" in found["api"]
    assert "inline-token" not in repr(found)
    found = problems({"api": {"token_env": "X", "token_file": "/y"}, "cameras": API_CAMERAS})
    assert found["api"] == "give token_env or token_file, not both"
    monkeypatch.delenv("RMF_NO_SUCH_TOKEN", raising=False)
    found = problems({"api": {"token_env": "RMF_NO_SUCH_TOKEN"}, "cameras": API_CAMERAS})
    assert found["api"] == "environment variable RMF_NO_SUCH_TOKEN is not set"
    monkeypatch.setenv("RMF_SHORT_TOKEN", "short")
    found = problems({"api": {"token_env": "RMF_SHORT_TOKEN"}, "cameras": API_CAMERAS})
    assert found["api"] == "the token must be at least 16 characters"
    found = problems({"api": {"token_file": str(tmp_path / "missing")}, "cameras": API_CAMERAS})
    assert found["api"].startswith("cannot read token file")

    token_file = tmp_path / "token"
    token_file.write_text("file-token-0123456789\n")
    cfg = parse_config({"api": {"token_file": str(token_file)}, "cameras": API_CAMERAS})
    secret = cfg.api.resolve_token()
    assert secret is not None and secret.value == "file-token-0123456789"
    assert "file-token" not in repr(cfg) and str(secret) == "***"
    assert parse_config({"cameras": API_CAMERAS}).api.resolve_token() is None


def test_a_freeze_floor_above_the_default_ceiling_raises_the_ceiling() -> None:
    # docs/chained.md: a central proxy behind a site with 2 s GOPs sets stall_timeout: 2.5.
    # Clamped to the default 2 s ceiling it switched on a site's normal wait for a keyframe.
    cfg = parse_config(
        {"cameras": {"c": {"sources": [{"url": "rtsp://h/c"}], "stall_timeout": 2.5}}}
    )
    assert (cfg.cameras["c"].stall_timeout, cfg.cameras["c"].stall_timeout_max) == (2.5, 2.5)
    cfg = parse_config({"cameras": {"c": {"sources": [{"url": "rtsp://h/c"}]}}})
    assert (cfg.cameras["c"].stall_timeout, cfg.cameras["c"].stall_timeout_max) == (0.15, 2.0)
    found = problems(
        {
            "cameras": {
                "c": {
                    "sources": [{"url": "rtsp://h/c"}],
                    "stall_timeout": 2.5,
                    "stall_timeout_max": 1.0,
                }
            }
        }
    )
    assert "below stall_timeout" in "".join(found.values()), found
