"""Site consolidation: cameras by identity, keys prefixed on a clash, rights never widened.

The four files under tests/data/sites/ are config/site-4to1.yaml split by primary
recorder, each with the spare as second source and its own users; merged, they must
give back the 4:1 layout's cameras and sources and each user exactly its cameras.
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rmfproxy.config import Config, load_document, parse_config_offline
from rmfproxy.manage.consolidate import (
    ConsolidationError,
    SiteInput,
    camera_identity,
    consolidate,
    source_key,
)

ROOT = Path(__file__).resolve().parent.parent
SITES = ROOT / "tests" / "data" / "sites"
SITE_FILES = [SITES / f"site-{x}.yaml" for x in "abcd"]
SITE_4TO1 = ROOT / "config" / "site-4to1.yaml"
SECRETS = {
    "RMF_NVR_A_PASSWORD": "nvr-a-secret-7f3a",
    "RMF_NVR_B_PASSWORD": "nvr-b-secret-91c2",
    "RMF_NVR_D_PASSWORD": "nvr-d-secret-0d4e",
    "RMF_NVR_SPARE_PASSWORD": "spare-secret-55aa",
    "RMF_OPERATOR_PASSWORD": "operator-secret-c0de",
    "RMF_SERVER_TECH_PASSWORD": "tech-secret-beef",
    "RMF_API_TOKEN": "api-token-secret-0123456789",
}
DOCK_DISPLAY_SECRET = "dock-display-secret-f00d"


def rmfproxy(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess; only the RMF_* variables in ``env`` are set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RMF_")}
    return subprocess.run(
        [sys.executable, "-m", "rmfproxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def offline(path: Path) -> Config:
    return parse_config_offline(load_document(path))


def site(name: str, data: dict[str, Any]) -> SiteInput:
    return SiteInput(name, f"{name}.yaml", parse_config_offline(copy.deepcopy(data)))


def rights(cfg: Config) -> dict[str, set[str]]:
    """User -> the camera keys it may read ("*" expanded)."""
    return {
        u.name: set(cfg.cameras) if u.cameras == "*" else set(u.cameras) for u in cfg.rtsp.users
    }


def cam(*urls: str, **extra: Any) -> dict[str, Any]:
    return {"sources": [{"url": u} for u in urls], **extra}


def user(name: str, cameras: Any, env: str | None = None) -> dict[str, Any]:
    return {"name": name, "password_env": env or f"RMF_{name.upper()}_PW", "cameras": cameras}


# the 4:1 layout, split and merged back ----------------------------------------------


def test_four_sites_merge_into_the_4to1_layout(tmp_path: Path) -> None:
    out = tmp_path / "merged.yaml"
    args = [str(p) for p in SITE_FILES]
    proc = rmfproxy("consolidate", *args, "-o", str(out), env=SECRETS)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"wrote {out}"
    merged, layout = offline(out), offline(SITE_4TO1)

    # Cameras and sources: the same keys, sources, priority order and settings.
    assert list(merged.cameras) == list(layout.cameras)
    for key, camera in layout.cameras.items():
        assert merged.cameras[key].model_dump() == camera.model_dump(), key
    urls = [s.url for c in merged.cameras.values() for s in c.sources]
    assert len(urls) == 22 and len(set(urls)) == 22
    assert merged.recorders == layout.recorders
    assert (merged.rtsp.listen, merged.api.listen, merged.api.token_env) == (
        layout.rtsp.listen,
        layout.api.listen,
        layout.api.token_env,
    )

    # Users: exactly the union of what each site gave them, no "*" left.
    assert all(u.cameras != "*" for u in merged.rtsp.users)
    given: dict[str, set[str]] = {}
    for path in SITE_FILES:
        for name, cams in rights(offline(path)).items():
            given.setdefault(name, set()).update(cams)
    after = rights(merged)
    assert after == given
    expected = rights(layout)
    assert after["operator"] == expected["operator"] == set(layout.cameras)
    assert after["dock-display"] == expected["dock-display"] == {"b-dock-1", "b-dock-2"}
    assert after["server-tech"] == {"d-server-room"}
    refs = {u.name: (u.password_env, u.password_file) for u in merged.rtsp.users}
    assert refs["operator"] == ("RMF_OPERATOR_PASSWORD", None)
    assert refs["dock-display"] == (None, Path("dock-display.password"))

    # The merged file passes `rmfproxy check` where its secrets exist.
    (tmp_path / "dock-display.password").write_text(DOCK_DISPLAY_SECRET + "\n")
    check = rmfproxy("check", "--config", str(out), cwd=tmp_path, env=SECRETS)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("ok: 11 camera(s), 22 source(s)")

    # Secrets stay references: no value in the file or the report.
    text = out.read_text()
    for secret in [*SECRETS.values(), DOCK_DISPLAY_SECRET]:
        assert secret not in text and secret not in proc.stdout
    assert "password:" not in text
    assert text.count("password_env: RMF_NVR_SPARE_PASSWORD") == 11


def test_dry_run_writes_nothing_and_lists_the_changes(tmp_path: Path) -> None:
    out = tmp_path / "merged.yaml"
    named = [f"--site={x}={p}" for x, p in zip("abcd", SITE_FILES, strict=True)]
    proc = rmfproxy("consolidate", *named, "-o", str(out), "--dry-run", env=SECRETS)
    assert proc.returncode == 0, proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    text = proc.stdout
    assert text.splitlines()[0] == f"consolidate 4 site(s) -> {out} (dry run: nothing written)"
    assert f"site a ({SITE_FILES[0]}): 3 camera(s)" in text
    assert "  kept     c-fence" in text
    operator = text[text.index("  operator (password_env RMF_OPERATOR_PASSWORD)") :]
    assert "    site a: * -> a-entrance, a-lobby, a-stairs" in operator
    assert "    site c: c-gate, c-yard-north, c-yard-south, c-fence\n" in operator
    assert "  dock-display (password_file dock-display.password)" in text
    assert "    after: b-dock-1, b-dock-2 (2)" in text
    assert "result: 11 camera(s), 22 source(s), 3 user(s), 5 recorder(s)" in text
    for secret in SECRETS.values():
        assert secret not in text


# matching and renaming ----------------------------------------------------------------


def test_a_key_clash_prefixes_every_clashing_camera_and_rights_follow() -> None:
    a = {
        "rtsp": {"users": [user("alice", "*"), user("guard", ["lobby"], "RMF_GUARD")]},
        "cameras": {
            "lobby": cam("rtsp://192.0.2.1/lobby", "rtsp://192.0.2.9/a-lobby"),
            "dock": cam("rtsp://192.0.2.1/dock"),
        },
    }
    b = {
        "rtsp": {"users": [user("bob", ["lobby"]), user("guard", ["lobby"], "RMF_GUARD")]},
        "cameras": {"lobby": cam("rtsp://192.0.2.2/lobby"), "yard": cam("rtsp://192.0.2.2/y")},
    }
    result = consolidate([site("north", a), site("south", b)])
    cams = result.document["cameras"]
    assert list(cams) == ["north-lobby", "dock", "south-lobby", "yard"]
    assert [s["url"] for s in cams["north-lobby"]["sources"]] == [
        "rtsp://192.0.2.1/lobby",
        "rtsp://192.0.2.9/a-lobby",
    ]
    users = {u["name"]: u["cameras"] for u in result.document["rtsp"]["users"]}
    # alice's "*" was north's cameras only; bob keeps south's lobby only; guard had a
    # "lobby" in each site (two different cameras) and keeps exactly those two.
    assert users == {
        "alice": ["north-lobby", "dock"],
        "guard": ["north-lobby", "south-lobby"],
        "bob": ["south-lobby"],
    }
    changes = {(c.site, c.key): (c.action, c.new_key) for c in result.cameras}
    assert changes[("north", "lobby")] == ("renamed", "north-lobby")
    assert changes[("south", "yard")] == ("kept", "yard")
    text = result.to_text(dry_run=True)
    assert "renamed  lobby -> north-lobby" in text
    assert "    site north: * -> north-lobby, dock" in text


def test_the_same_camera_in_two_sites_is_one_camera_with_merged_sources() -> None:
    a = {
        "rtsp": {"users": [user("ann", ["gate"])]},
        "cameras": {
            "gate": cam("rtsp://CAM-A.example/gate", "rtsp://192.0.2.9/gate"),
            "serial": cam("rtsp://192.0.2.1/s1", id="SN-0042"),
        },
    }
    b = {
        "rtsp": {"users": [user("ben", ["front-gate", "cam-42"])]},
        "cameras": {
            # Same first source spelled differently (host case, default port), new standby.
            "front-gate": cam(
                "rtsp://cam-a.example:554/gate",
                "rtsp://192.0.2.9:554/gate",
                "rtsp://192.0.2.3/gate",
            ),
            # Same id, other URLs: the same camera, seen through other recorders.
            "cam-42": cam("rtsp://192.0.2.7/ch42", id="SN-0042"),
        },
    }
    result = consolidate([site("a", a), site("b", b)])
    cams = result.document["cameras"]
    assert list(cams) == ["gate", "serial"]
    assert [s["url"] for s in cams["gate"]["sources"]] == [
        "rtsp://CAM-A.example/gate",
        "rtsp://192.0.2.9/gate",
        "rtsp://192.0.2.3/gate",
    ]
    assert [s["url"] for s in cams["serial"]["sources"]] == [
        "rtsp://192.0.2.1/s1",
        "rtsp://192.0.2.7/ch42",
    ]
    assert cams["serial"]["id"] == "SN-0042"
    users = {u["name"]: u["cameras"] for u in result.document["rtsp"]["users"]}
    assert users == {"ann": ["gate"], "ben": ["gate", "serial"]}
    merged = next(c for c in result.cameras if c.site == "b" and c.key == "front-gate")
    assert merged.action == "merged" and merged.new_key == "gate"
    assert merged.sources_added == ("rtsp://192.0.2.3/gate",)
    assert len(merged.sources_known) == 2


def test_camera_identity_and_source_key_normalize_spelling() -> None:
    cfg = parse_config_offline(
        {
            "cameras": {
                "x": cam("rtsp://viewer@CAM.example/live?ch=1"),
                "y": cam("rtsp://cam.example:554/live?ch=1"),
                "z": cam("rtsp://cam.example:8554/live?ch=1"),
                "w": cam("rtsp://cam.example/live?ch=2", id="GUID-1"),
            }
        }
    )
    ids = {k: camera_identity(c) for k, c in cfg.cameras.items()}
    assert ids["x"] == ids["y"] == "url:cam.example:554/live?ch=1"
    assert ids["z"] != ids["x"]
    assert ids["w"] == "id:GUID-1"
    assert source_key("rtsps://[2001:db8::1]/a") == "rtsps://[2001:db8::1]:322/a"


def test_a_source_name_taken_by_another_url_gets_the_site_suffix() -> None:
    def gate(*sources: tuple[str, str]) -> dict[str, Any]:
        return {"cameras": {"gate": {"sources": [{"name": n, "url": u} for n, u in sources]}}}

    a = gate(("nvr", "rtsp://192.0.2.1/g"))
    b = gate(("nvr", "rtsp://192.0.2.1/g"), ("spare", "rtsp://192.0.2.5/g"))
    c = gate(("nvr", "rtsp://192.0.2.1/g"), ("spare", "rtsp://192.0.2.6/g"))
    result = consolidate([site("a", a), site("b", b), site("c", c)])
    sources = result.document["cameras"]["gate"]["sources"]
    assert [(s["name"], s["url"]) for s in sources] == [
        ("nvr", "rtsp://192.0.2.1/g"),
        ("spare", "rtsp://192.0.2.5/g"),
        ("spare-c", "rtsp://192.0.2.6/g"),
    ]
    assert any("named spare-c" in n for n in result.notes)


# refusals -----------------------------------------------------------------------------


def test_one_user_name_with_two_password_references_is_an_error(tmp_path: Path) -> None:
    a = {"rtsp": {"users": [user("op", "*", "RMF_OP_A")]}, "cameras": {"x": cam("rtsp://h1/x")}}
    b = {"rtsp": {"users": [user("op", "*", "RMF_OP_B")]}, "cameras": {"y": cam("rtsp://h2/y")}}
    with pytest.raises(ConsolidationError) as info:
        consolidate([site("a", a), site("b", b)])
    assert info.value.problems == [
        (
            "user op",
            "site a takes its password from password_env RMF_OP_A, site b from password_env "
            "RMF_OP_B: one user name must have one password (rename one of the users, or "
            "give both the same reference)",
        )
    ]
    files = []
    for name, data in (("a", a), ("b", b)):
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump(data))
    out = tmp_path / "merged.yaml"
    proc = rmfproxy("consolidate", *map(str, files), "-o", str(out))
    assert proc.returncode == 1
    assert "user op: site a takes its password from password_env RMF_OP_A" in proc.stderr
    assert not out.exists()


def test_recorders_must_agree_and_inputs_are_not_overwritten(tmp_path: Path) -> None:
    a = {"recorders": {"r": {"site": "x"}}, "cameras": {"x": cam("rtsp://h1/x")}}
    b = {"recorders": {"r": {"site": "y"}}, "cameras": {"y": cam("rtsp://h2/y")}}
    with pytest.raises(ConsolidationError) as info:
        consolidate([site("a", a), site("b", b)])
    assert info.value.problems[0][0] == "recorders.r"
    proc = rmfproxy("consolidate", str(SITE_FILES[0]), "-o", str(SITE_FILES[0]))
    assert proc.returncode == 1 and "is one of the inputs" in proc.stderr
    proc = rmfproxy("consolidate", str(SITE_FILES[0]))
    assert proc.returncode == 1 and "give -o FILE" in proc.stderr


def test_an_open_site_is_noted_and_not_widened() -> None:
    a = {"rtsp": {"users": [user("op", "*")]}, "cameras": {"x": cam("rtsp://h1/x")}}
    b = {"cameras": {"y": cam("rtsp://h2/y")}}  # no users: an open server
    result = consolidate([site("a", a), site("b", b)])
    assert result.document["rtsp"]["users"] == [
        {"name": "op", "password_env": "RMF_OP_PW", "cameras": ["x"]}
    ]
    assert any(n.startswith("site(s) b had no users") for n in result.notes)


def test_pending_survives_only_when_every_copy_is_pending() -> None:
    a = {"cameras": {"x": cam("rtsp://h1/x", pending=True), "y": cam("rtsp://h1/y")}}
    b = {"cameras": {"x": cam("rtsp://h1/x", pending=True), "y": cam("rtsp://h1/y", pending=True)}}
    result = consolidate([site("a", a), site("b", b)])
    assert result.document["cameras"]["x"]["pending"] is True
    assert "pending" not in result.document["cameras"]["y"]
    assert list(result.pending) == ["x"]


# probing ------------------------------------------------------------------------------


class Responder:
    """A tiny RTSP server on 127.0.0.1: DESCRIBE of /ok gets 401, anything else 404."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            path = head.split(b" ")[1]
            status = (
                b'401 Unauthorized\r\nWWW-Authenticate: Digest realm="r", nonce="n"'
                if path.endswith(b"/ok")
                else b"404 Not Found"
            )
            writer.write(b"RTSP/1.0 " + status + b"\r\nCSeq: 1\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_probe_marks_a_camera_no_source_of_which_answers_pending(tmp_path: Path) -> None:
    responder = Responder()
    async with responder as port:
        dead = dead_port()
        data = {
            "cameras": {
                "alive": {
                    "sources": [
                        {"url": f"rtsp://127.0.0.1:{dead}/alive"},
                        {
                            "url": f"rtsp://viewer@127.0.0.1:{port}/live/ok",
                            "username": "rmfproxy",
                            "password_env": "RMF_REC_PASSWORD",
                        },
                    ]
                },
                "gone": cam(f"rtsp://127.0.0.1:{dead}/gone", f"rtsp://127.0.0.1:{port}/missing"),
            }
        }
        src = tmp_path / "site.yaml"
        src.write_text(yaml.safe_dump(data))
        out = tmp_path / "merged.yaml"

        async def run(*extra: str) -> tuple[int, str]:
            env = {k: v for k, v in os.environ.items() if not k.startswith("RMF_")}
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "rmfproxy",
                "consolidate",
                str(src),
                "-o",
                str(out),
                *extra,
                cwd=ROOT,
                env={**env, "RMF_REC_PASSWORD": "rec-secret-1234"},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, stdout.decode() + stderr.decode()

        # Without --probe nothing is contacted.
        code, _ = await run()
        assert code == 0 and responder.requests == []
        assert "pending" not in out.read_text()

        code, text = await run("--probe", "--probe-timeout", "2")
        assert code == 0, text
    merged = yaml.safe_load(out.read_text())
    assert "pending" not in merged["cameras"]["alive"]  # 401: there, wants credentials
    assert merged["cameras"]["gone"]["pending"] is True
    assert offline(out).cameras["gone"].pending
    assert "pending cameras (written with pending: true):" in text
    line = next(x for x in text.splitlines() if x.startswith("  gone: no source answered"))
    assert f"rtsp://127.0.0.1:{dead}/gone: cannot connect: Connection refused" in line
    assert f"rtsp://127.0.0.1:{port}/missing: RTSP 404 Not Found" in line
    # One DESCRIBE per source, without credentials or the URL's user.
    assert len(responder.requests) == 2
    for head in responder.requests:
        assert head.startswith(b"DESCRIBE rtsp://127.0.0.1:")
        assert b"Authorization" not in head and b"viewer" not in head
        assert b"rec-secret" not in head


def test_a_prefixed_key_that_is_taken_and_a_bad_site_name_are_errors() -> None:
    a = {"cameras": {"lobby": cam("rtsp://h1/lobby")}}
    b = {"cameras": {"lobby": cam("rtsp://h2/lobby"), "a-lobby": cam("rtsp://h2/other")}}
    with pytest.raises(ConsolidationError) as info:
        consolidate([site("a", a), site("b", b)])
    assert info.value.problems == [
        (
            "camera key a-lobby",
            "camera a-lobby of site b and camera lobby of site a would both get it (a clash "
            "is prefixed with the site name): rename one of them",
        )
    ]
    with pytest.raises(ConsolidationError) as info:
        consolidate([site("my site", a)])
    assert "name it with --site NAME=FILE" in info.value.problems[0][1]
