"""Two proxies in step (an active-active pair, rmfproxy.manage.sync): a camera changed on
either is served by the other within a GOP and 1 s while FFmpeg (PyAV) readers of another camera on
each notice nothing; peer requests are signed (wrong, stale or replayed: 401, nothing
changed); a proxy that was down catches up; a camera edited on both while the link was
cut is a conflict on both, never silently overwritten; no ping-pong once in step."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
import yaml

from rmfproxy.app import Proxy
from rmfproxy.config import Config, ConfigError, load_document, parse_config
from rmfproxy.manage import sync
from rmfproxy.manage.revisions import ConfigChange, ConfigKeeper
from rmfproxy.manage.signing import (
    SIGNATURE,
    SKEW,
    SignatureGuard,
    response_is_signed,
    sign_headers,
)
from rmfproxy.manage.sync import (
    START,
    CameraOp,
    CameraVersion,
    Verdict,
    judge,
    merged,
    successor,
)
from rmfproxy.sim.probe import read_rtsp
from rmfproxy.sim.runner import SimCluster, SimSpec
from tests.support import LoopStalls, wait_ready

TOKEN = "sync-admin-token-0123456789"
PAIR = "sync-pair-secret-0123456789"
NOWHERE = "http://127.0.0.1:1"
"""The peer until the other proxy's port is known (refused: the follower backs off)."""
FPS = 25
GOP = 10
"""The simulated cameras' GOP (0.4 s): a camera a change (re)creates is served from its
first keyframe, so each of the 20 changes below waits about one GOP for it."""
SERVED_WITHIN = GOP / FPS + 1.0
"""Seconds from a change on one proxy to the camera served by the other: its first keyframe
plus the 1 s the sync (long poll, apply, feed start) is allowed."""

e2e = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]


# the pure parts -----------------------------------------------------------------------


def test_signatures_are_checked_for_token_time_target_body_and_replay() -> None:
    guard = SignatureGuard()
    now = 1_000_000.0
    h = sign_headers(PAIR, "GET", "/api/v1/config/changes?since=3", b"", now)
    assert guard.check(PAIR, "GET", "/api/v1/config/changes?since=3", b"", h, now + 1) is None
    # the same request again: a replay
    assert guard.check(PAIR, "GET", "/api/v1/config/changes?since=3", b"", h, now + 2) == (
        "replayed"
    )
    h = sign_headers(PAIR, "GET", "/x?a=1", b"body", now)
    assert guard.check("another-secret-0123456", "GET", "/x?a=1", b"body", h, now) == (
        "bad-signature"
    )
    assert guard.check(PAIR, "GET", "/x?a=2", b"body", h, now) == "bad-signature"
    assert guard.check(PAIR, "GET", "/x?a=1", b"bodY", h, now) == "bad-signature"
    assert guard.check(PAIR, "PUT", "/x?a=1", b"body", h, now) == "bad-signature"
    assert guard.check(PAIR, "GET", "/x?a=1", b"body", h, now + SKEW + 1) == "stale-timestamp"
    assert guard.check(PAIR, "GET", "/x?a=1", b"body", h, now - SKEW - 1) == "stale-timestamp"
    assert guard.check(PAIR, "GET", "/x?a=1", b"body", {}, now) == "unsigned"
    assert guard.check(PAIR, "GET", "/x?a=1", b"body", h, now) is None  # untouched: fine
    # two identical requests in the same second differ by their nonce
    h1 = sign_headers(PAIR, "GET", "/y", b"", now)
    h2 = sign_headers(PAIR, "GET", "/y", b"", now)
    assert guard.check(PAIR, "GET", "/y", b"", h1, now) is None
    assert guard.check(PAIR, "GET", "/y", b"", h2, now) is None


BODY_A = {"sources": [{"url": "rtsp://r1/a"}]}
BODY_B = {"sources": [{"url": "rtsp://r2/a"}]}
BODY_C = {"sources": [{"url": "rtsp://r3/a"}]}


def op(body: dict[str, Any] | None, v: CameraVersion) -> CameraOp:
    return CameraOp("cam", body, v)


def test_judge_follows_versions_and_finds_concurrent_edits() -> None:
    a1 = successor("a", 0, START, None)  # a edits the camera it started with
    assert a1.id == (1, "a") and a1.ancestors == ((0, ""),)
    # b has the start version: a's edit replaces it
    assert judge("b", START, BODY_A, op(BODY_B, a1)) is Verdict.APPLY
    # a never re-applies its own operation coming back through b
    assert judge("a", a1, BODY_B, op(BODY_B, a1)) is Verdict.OWN
    # b edits on top of a's version; a applies it; a's older version is known to b
    b2 = successor("b", 1, a1, None)
    assert judge("a", a1, BODY_B, op(BODY_C, b2)) is Verdict.APPLY
    assert judge("b", b2, BODY_C, op(BODY_B, a1)) is Verdict.KNOWN  # never backwards
    # both edit a1 while cut off: a conflict on both sides
    a3 = successor("a", 2, a1, None)
    b3 = successor("b", 2, a1, None)
    assert judge("a", a3, BODY_C, op(BODY_A, b3)) is Verdict.CONFLICT
    assert judge("b", b3, BODY_A, op(BODY_C, a3)) is Verdict.CONFLICT
    # the same edit on both: merged, and the same version on both sides
    assert judge("a", a3, BODY_C, op(BODY_C, b3)) is Verdict.SAME
    assert merged(a3, b3) == merged(b3, a3)
    # a resolves the conflict by writing again: b takes it
    a4 = successor("a", 3, a3, b3)
    assert judge("b", b3, BODY_A, op(BODY_B, a4)) is Verdict.APPLY
    # different start files: the same start version with other bodies is a conflict
    assert judge("b", START, BODY_A, op(BODY_B, START)) is Verdict.CONFLICT


def test_sync_section_is_validated_with_field_names(monkeypatch: pytest.MonkeyPatch) -> None:
    cams = {"a": {"sources": [{"url": "rtsp://127.0.0.1:1/a"}]}}
    with pytest.raises(ConfigError) as exc:
        parse_config({"cameras": cams, "sync": {"peer": "ftp://x", "token_env": "X"}})
    assert [w for w, _ in exc.value.problems] == ["sync.peer"]
    with pytest.raises(ConfigError) as exc:
        parse_config({"cameras": cams, "sync": {"peer": "http://h:1", "token": "inline-secret"}})
    assert [w for w, _ in exc.value.problems] == ["sync"]
    assert "inline token is not accepted" in exc.value.problems[0][1]
    with pytest.raises(ConfigError) as exc:
        parse_config({"cameras": cams, "sync": {"peer": "http://h:1", "token_env": "RMF_S_NO"}})
    assert exc.value.problems == [("sync", "environment variable RMF_S_NO is not set")]
    monkeypatch.setenv("RMF_S_SHORT", "short")
    with pytest.raises(ConfigError) as exc:
        parse_config({"cameras": cams, "sync": {"peer": "http://h:1", "token_env": "RMF_S_SHORT"}})
    assert "at least 16" in exc.value.problems[0][1]
    monkeypatch.setenv("RMF_S_PAIR", PAIR)
    cfg = parse_config(
        {"cameras": cams, "sync": {"peer": "http://h:1/", "token_env": "RMF_S_PAIR"}}
    )
    assert cfg.sync is not None and cfg.sync.peer == "http://h:1"
    assert PAIR not in repr(cfg)


class FakeProxy:
    """What a keeper changes, without sockets: the config it runs."""

    def __init__(self, config: Config) -> None:
        self.config = config

    async def apply(self, new: Config) -> ConfigChange:
        old, self.config = self.config, new
        return ConfigChange(
            [c for c in new.cameras if c not in old.cameras],
            [c for c in old.cameras if c not in new.cameras],
            [c for c in new.cameras if c in old.cameras and new.cameras[c] != old.cameras[c]],
        )


def cam(n: int) -> dict[str, Any]:
    return {"sources": [{"url": f"rtsp://127.0.0.1:1/{n}"}]}


def keeper(tmp_path: Path, node: str, doc: dict[str, Any]) -> ConfigKeeper:
    path = tmp_path / f"{node}.yaml"
    path.write_text(yaml.safe_dump(doc))
    k = ConfigKeeper(FakeProxy(parse_config(doc)), doc, path)
    k.enable_sync(node, "http://peer:1", PAIR)
    return k


async def exchange(a: ConfigKeeper, b: ConfigKeeper, seen: dict[str, int]) -> list[Verdict]:
    """One round of each following the other's feed (what PeerFollower does): the
    verdicts but OWN (a keeper's own operations coming back through the other)."""
    verdicts = []
    for me, peer in ((a, b), (b, a)):
        ops = peer.changes_since(seen[me.node])
        assert ops is not None
        for op in ops:
            verdicts.append(await me.apply_peer(op))
        seen[me.node] = peer.revision
    return [v for v in verdicts if v is not Verdict.OWN]


@pytest.mark.asyncio
async def test_two_keepers_converge_without_ping_pong_and_keep_conflicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMF_S_PAIR", PAIR)
    doc = {"cameras": {"x": cam(1), "y": cam(2)}, "api": {"enabled": False}}
    user = {"name": "u", "password_env": "RMF_S_PAIR", "cameras": ["x"]}
    a = keeper(tmp_path, "a", {**doc, "rtsp": {"users": [user]}})
    b = keeper(tmp_path, "b", doc)
    seen = {"a": 1, "b": 1}
    await a.put_camera("z", cam(3), "*")
    await b.delete_camera("y", "*")
    assert await exchange(a, b, seen) == [Verdict.APPLY, Verdict.APPLY]
    assert a.document["cameras"] == b.document["cameras"] == {"x": cam(1), "z": cam(3)}
    # in step: further rounds change nothing, own operations come back and are skipped
    revisions = (a.revision, b.revision)
    assert await exchange(a, b, seen) == []
    assert (a.revision, b.revision) == revisions == (3, 3)
    # SIGHUP: the operator's file edited on b follows too
    assert b.path is not None
    edited = yaml.safe_load(b.path.read_text())
    edited["cameras"]["x"] = cam(9)
    b.path.write_text(yaml.safe_dump(edited))
    await b.reload()
    assert await exchange(a, b, seen) == [Verdict.APPLY]
    assert a.document["cameras"]["x"] == cam(9)
    # concurrent edits: a conflict on both, each keeps its own
    await a.put_camera("z", cam(4), "*")
    await b.put_camera("z", cam(5), "*")
    assert await exchange(a, b, seen) == [Verdict.CONFLICT, Verdict.CONFLICT]
    assert a.document["cameras"]["z"] == cam(4) and b.document["cameras"]["z"] == cam(5)
    assert a.conflicts["z"].remote.origin == "b" and b.conflicts["z"].remote.origin == "a"
    # kept across a restart (the state file)
    again = ConfigKeeper(FakeProxy(parse_config(b.document)), b.document, b.path)
    again.enable_sync("b", "http://peer:1", PAIR)
    assert set(again.conflicts) == {"z"} and again.versions == b.versions
    # b writes z again (the same body even): resolved on both, a takes it
    await b.put_camera("z", cam(5), "*")
    assert not b.conflicts
    assert await exchange(a, b, seen) == [Verdict.APPLY]
    assert not a.conflicts and a.document["cameras"]["z"] == cam(5)
    # a peer change that does not validate here (a's user lists x) is kept out, reported
    await b.delete_camera("x", "*")
    assert await exchange(a, b, seen) == [Verdict.CONFLICT]
    assert "x" in a.document["cameras"] and a.conflicts["x"].remote.origin == "b"


# end to end ---------------------------------------------------------------------------


def camera(sim: SimCluster, cam: str, **extra: Any) -> dict[str, Any]:
    return {
        "sources": [
            {"url": sim.url("r1", cam), "name": "r1"},
            {"url": sim.url("r2", cam), "name": "r2"},
        ],
        **extra,
    }


def document(cameras: dict[str, Any], node: str) -> dict[str, Any]:
    return {
        "rtsp": {"listen": "127.0.0.1:0"},
        "api": {"listen": "127.0.0.1:0", "token_env": "RMF_S_TOKEN"},
        "sync": {"peer": NOWHERE, "token_env": "RMF_S_PAIR", "node": node},
        "cameras": cameras,
    }


def make_proxy(path: Path) -> Proxy:
    doc = load_document(path)
    return Proxy(parse_config(doc), document=doc, path=path)


async def link(a: Proxy, b: Proxy) -> None:
    """Point each follower at the other's admin port (known once both listen)."""
    for one, other in ((a, b), (b, a)):
        assert one.sync is not None
        await one.sync.stop()
        one.sync.peer = other.api_url("").rstrip("/")
        one.sync.start()


async def cut(*proxies: Proxy) -> None:
    for p in proxies:
        assert p.sync is not None
        await p.sync.stop()


async def until(cond: Any, limit: float = 5.0) -> float:
    """Seconds until ``cond()`` held."""
    t0 = time.monotonic()
    async with asyncio.timeout(limit):
        while not cond():
            await asyncio.sleep(0.02)
    return time.monotonic() - t0


class Admin:
    """Admin API calls of one proxy, with the bearer token and its current ETag."""

    def __init__(self, http: aiohttp.ClientSession, proxy: Proxy) -> None:
        self.http = http
        self.proxy = proxy

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}", "If-Match": self.proxy.keeper.etag}

    async def put(self, cam: str, body: dict[str, Any]) -> None:
        url = self.proxy.api_url(f"/api/v1/cameras/{cam}")
        async with self.http.put(url, json=body, headers=self.headers()) as r:
            assert r.status in (200, 201), await r.text()

    async def delete(self, cam: str) -> None:
        url = self.proxy.api_url(f"/api/v1/cameras/{cam}")
        async with self.http.delete(url, headers=self.headers()) as r:
            assert r.status == 200, await r.text()

    async def get(self, path: str) -> Any:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with self.http.get(self.proxy.api_url(path), headers=auth) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def metric(self, name: str) -> float:
        async with self.http.get(self.proxy.api_url("/metrics")) as r:
            for line in (await r.text()).splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise AssertionError(f"no {name}")


def pair_files(tmp_path: Path, cameras: dict[str, Any]) -> tuple[Path, Path]:
    paths = []
    for node in ("a", "b"):
        (tmp_path / node).mkdir()
        path = tmp_path / node / "rmfproxy.yaml"
        path.write_text(yaml.safe_dump(document(cameras, node)))
        paths.append(path)
    return paths[0], paths[1]


@pytest.mark.e2e
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_changes_on_either_proxy_follow_and_readers_never_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMF_S_TOKEN", TOKEN)
    monkeypatch.setenv("RMF_S_PAIR", PAIR)
    spec = SimSpec(cameras=["lobby", "gate", "yard", "dock"], size=(160, 96), fps=FPS, gop=GOP)
    async with SimCluster(spec) as sim, aiohttp.ClientSession() as http:
        pa, pb = pair_files(tmp_path, {c: camera(sim, c) for c in ("lobby", "gate")})
        a, b = make_proxy(pa), make_proxy(pb)
        stalls = LoopStalls()
        await a.start()
        await b.start()
        try:
            await link(a, b)
            await wait_ready(a, ("lobby", "gate"))
            await wait_ready(b, ("lobby", "gate"))
            await stalls.__aenter__()
            # the readers read through every change, until the checks below are done
            stop, t_read = threading.Event(), time.monotonic()
            readers = [
                asyncio.create_task(
                    asyncio.to_thread(read_rtsp, p.url("lobby"), seconds=30.0, stop=stop)
                )
                for p in (a, b)
            ]
            api = {"a": Admin(http, a), "b": Admin(http, b)}
            peers = {"a": b, "b": a}
            # 20 changes, alternating between the two proxies: puts (each body new) and
            # deletes of cameras that exist, over three cameras
            steps: list[tuple[str, str, str, dict[str, Any] | None]] = []
            present = {"gate"}
            for i in range(20):
                where = "ab"[i % 2]
                cam = ("yard", "gate", "dock")[i % 3]
                if cam in present and i % 4 == 3:
                    steps.append((where, "delete", cam, None))
                    present.discard(cam)
                else:
                    body = camera(sim, cam, stall_timeout=round(0.2 + 0.01 * i, 2))
                    steps.append((where, "put", cam, body))
                    present.add(cam)
            took = []
            for where, what, cam, body in steps:
                other = peers[where]
                t0 = time.monotonic()
                if what == "put":
                    assert body is not None
                    await api[where].put(cam, body)
                    # served by the other proxy: its feed has a keyframe to start clients on
                    await until(
                        lambda c=cam, o=other, bd=body: (
                            o.keeper.document["cameras"].get(c) == bd and c in o.feeds
                        )
                    )
                    await wait_ready(other, (cam,), limit=5.0)
                else:
                    await api[where].delete(cam)
                    await until(
                        lambda c=cam, o=other: (
                            c not in o.feeds and c not in o.keeper.document["cameras"]
                        )
                    )
                took.append(time.monotonic() - t0)
            assert max(took) < SERVED_WITHIN, took
            # served for real: FFmpeg reads the camera added on A from B; meanwhile, in
            # step: no ping-pong, the revisions stay where they are
            revisions = (a.keeper.revision, b.keeper.revision)
            got, _ = await asyncio.gather(
                asyncio.to_thread(read_rtsp, b.url("yard"), seconds=1.0), asyncio.sleep(1.5)
            )
            assert got.error is None and got.frames_decoded > 10 and got.decode_errors == 0
            assert got.repeated() == 0 and got.lost() == 0 and got.beyond_span() <= 0
            assert a.keeper.document["cameras"] == b.keeper.document["cameras"]
            assert (a.keeper.revision, b.keeper.revision) == revisions
            # each change made one revision on each side, no more
            assert revisions == (1 + len(steps), 1 + len(steps))
            assert await api["a"].metric("rmfproxy_sync_peer_up") == 1
            from_b = sum(1 for where, *_ in steps if where == "b")
            assert await api["a"].metric("rmfproxy_sync_applied_total") == from_b
            assert await api["b"].metric("rmfproxy_sync_conflicts") == 0
            # the last change was made on one proxy; the other has it from its peer
            made_on = steps[-1][0]
            follower = "b" if made_on == "a" else "a"
            history = await api[follower].get("/api/v1/config/revisions")
            last = history["changes"][-1]
            assert last["origin"] == "peer" and last["ops"][0]["origin"] == made_on
            stop.set()
            read_s = time.monotonic() - t_read
            results = await asyncio.gather(*readers)
        finally:
            await stalls.__aexit__()
            await b.stop()
            await a.stop()
    for result in results:
        assert result.error is None and result.decode_errors == 0
        assert result.repeated() == 0 and result.lost() == 0 and result.beyond_span() <= 0
        # (plus what the event loop was kept from running by a loaded machine, if anything)
        assert result.max_gap_seconds() < 0.5 + stalls.longest, (result.max_gap_seconds(), stalls)
        assert result.frames_decoded > (read_s - 2.0) * FPS, (result.frames_decoded, read_s)
    # the pair secret is in neither file
    assert PAIR not in pa.read_text() and PAIR not in pb.read_text()


@pytest.mark.e2e
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_peer_requests_need_a_fresh_unique_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMF_S_TOKEN", TOKEN)
    monkeypatch.setenv("RMF_S_PAIR", PAIR)
    cams = {"a": {"sources": [{"url": "rtsp://127.0.0.1:1/a"}]}}
    pa, _ = pair_files(tmp_path, cams)
    a = make_proxy(pa)
    await a.start()
    try:
        async with aiohttp.ClientSession() as http:
            target = "/api/v1/config/changes?since=1&wait=0"
            url = a.api_url(target)

            async def status(headers: dict[str, str], method: str = "GET", u: str = url) -> int:
                async with http.request(method, u, headers=headers, json=None) as r:
                    return r.status

            good = sign_headers(PAIR, "GET", target, b"", time.time())
            async with http.get(url, headers=good) as r:
                assert r.status == 200
                answer = await r.read()
                # the answer is signed for this request: a follower can trust it
                given = r.headers.get(SIGNATURE)
                assert response_is_signed(PAIR, good[SIGNATURE], 200, answer, given)
                assert not response_is_signed(PAIR, good[SIGNATURE], 200, answer + b" ", given)
            assert await status(good) == 401  # replayed
            assert await status({}) == 401  # neither signature nor token
            wrong = sign_headers("not-the-pair-secret-42", "GET", target, b"", time.time())
            assert await status(wrong) == 401
            old = sign_headers(PAIR, "GET", target, b"", time.time() - 120)
            assert await status(old) == 401
            other = sign_headers(PAIR, "GET", "/api/v1/config/changes?since=0", b"", time.time())
            assert await status(other) == 401  # signed for another query
            assert await status({"Authorization": f"Bearer {TOKEN}"}) == 200
            # 410 and the snapshot for a revision older than the history
            async with http.get(
                a.api_url("/api/v1/config/changes?since=0"),
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as r:
                assert r.status == 410
                snap = await r.json()
                assert snap["node"] == "a" and set(snap["cameras"]) == {"a"}
            # a signature does not open the write endpoints: nothing changes
            put = "/api/v1/cameras/b"
            body = b'{"sources": [{"url": "rtsp://127.0.0.1:1/b"}]}'
            h = sign_headers(PAIR, "PUT", put, body, time.time()) | {"If-Match": "*"}
            async with http.put(a.api_url(put), data=body, headers=h) as r:
                assert r.status == 401
            assert a.keeper.revision == 1 and set(a.feeds) == {"a"}
    finally:
        await a.stop()


@pytest.mark.e2e
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_catch_up_after_downtime_and_conflicts_kept_on_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMF_S_TOKEN", TOKEN)
    monkeypatch.setenv("RMF_S_PAIR", PAIR)
    spec = SimSpec(cameras=["lobby", "gate", "yard"], size=(160, 96))
    async with SimCluster(spec) as sim, aiohttp.ClientSession() as http:
        pa, pb = pair_files(tmp_path, {c: camera(sim, c) for c in ("lobby", "gate")})
        a, b = make_proxy(pa), make_proxy(pb)
        await a.start()
        await b.start()
        running = [a, b]
        try:
            await link(a, b)
            admin_a = Admin(http, a)
            await admin_a.put("yard", camera(sim, "yard"))
            await until(lambda: "yard" in b.feeds)
            await until(lambda: b.keeper.peer_revision == a.keeper.revision)
            seen = b.keeper.peer_revision
            # B goes down; A changes on
            await b.stop()
            running.remove(b)
            await admin_a.delete("gate")
            await admin_a.put("yard", camera(sim, "yard", stall_timeout=0.3))
            # B is back (a new process: the same file and state) and asks for what it missed
            b2 = make_proxy(pb)
            assert b2.keeper.peer_revision == seen  # kept in rmfproxy.yaml.sync-state.json
            await b2.start()
            running.append(b2)
            await link(a, b2)
            await until(
                lambda: (
                    "gate" not in b2.feeds
                    and b2.keeper.document["cameras"]["yard"].get("stall_timeout") == 0.3
                )
            )
            await until(lambda: b2.keeper.peer_revision == a.keeper.revision)
            assert b2.keeper.document["cameras"] == a.keeper.document["cameras"]

            # the link is cut; both edit gate... lobby differently
            await cut(a, b2)
            admin_b = Admin(http, b2)
            await admin_a.put("lobby", camera(sim, "lobby", stall_timeout=0.4))
            await admin_b.put("lobby", camera(sim, "lobby", stall_timeout=0.6))
            await link(a, b2)
            await until(lambda: "lobby" in a.keeper.conflicts and "lobby" in b2.keeper.conflicts)
            # not overwritten: each keeps its own
            assert a.keeper.document["cameras"]["lobby"]["stall_timeout"] == 0.4
            assert b2.keeper.document["cameras"]["lobby"]["stall_timeout"] == 0.6
            for admin, mine, theirs in ((admin_a, "a", "b"), (admin_b, "b", "a")):
                listed = (await admin.get("/api/v1/config/conflicts"))["conflicts"]
                assert [c["camera"] for c in listed] == ["lobby"]
                assert listed[0]["local"]["origin"] == mine
                assert listed[0]["remote"]["origin"] == theirs
                assert await admin.metric("rmfproxy_sync_conflicts") == 1
                # and on the camera itself (the status page marks the tile)
                assert (await admin.get("/api/v1/cameras/lobby"))["sync_conflict"] is True
            # no ping-pong while in conflict either
            revisions = (a.keeper.revision, b2.keeper.revision)
            await asyncio.sleep(1.0)
            assert (a.keeper.revision, b2.keeper.revision) == revisions
            # someone writes lobby again (on A): it clears on both and B takes it
            await admin_a.put("lobby", camera(sim, "lobby", stall_timeout=0.5))
            await until(lambda: not a.keeper.conflicts and not b2.keeper.conflicts)
            assert b2.keeper.document["cameras"]["lobby"]["stall_timeout"] == 0.5
            revisions = (a.keeper.revision, b2.keeper.revision)
            await asyncio.sleep(1.0)
            assert (a.keeper.revision, b2.keeper.revision) == revisions

            # B loses its sync state: since=0 gets the snapshot, and it converges quietly
            await b2.stop()
            running.remove(b2)
            state = pb.with_name(pb.name + ".sync-state.json")
            state.unlink()
            await admin_a.put("gate", camera(sim, "gate"))
            b2 = make_proxy(pb)
            await b2.start()
            running.append(b2)
            await link(a, b2)
            await until(lambda: "gate" in b2.feeds)
            assert b2.keeper.document["cameras"] == a.keeper.document["cameras"]
            assert not b2.keeper.conflicts and not a.keeper.conflicts
        finally:
            for p in reversed(running):
                await p.stop()


@pytest.mark.e2e
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_an_unreachable_peer_is_logged_once_per_change_of_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMF_S_TOKEN", TOKEN)
    monkeypatch.setenv("RMF_S_PAIR", PAIR)
    monkeypatch.setattr(sync, "BACKOFF_MIN", 0.02)
    monkeypatch.setattr(sync, "BACKOFF_MAX", 0.05)
    cams = {"a": {"sources": [{"url": "rtsp://127.0.0.1:1/a"}]}}
    pa, pb = pair_files(tmp_path, cams)
    a, b = make_proxy(pa), make_proxy(pb)
    with structlog.testing.capture_logs() as logs:
        await a.start()
        await b.start()
        try:
            assert a.sync is not None
            await asyncio.sleep(1.0)  # many retries against NOWHERE
            await link(a, b)
            await until(lambda: a.sync is not None and a.sync.up)
            await b.stop()
            await until(lambda: a.sync is not None and not a.sync.up)
            await asyncio.sleep(0.5)
        finally:
            await a.stop()
    events = [e["event"] for e in logs if e["event"].startswith("sync.peer_")]
    mine = [e for e in logs if e["event"].startswith("sync.peer_") and e["peer"] != NOWHERE]
    # A: down (NOWHERE), then up (B), then down (B stopped): one line each, not per retry
    assert [e["event"] for e in mine][-2:] == ["sync.peer_up", "sync.peer_down"]
    assert events.count("sync.peer_down") <= 4
    assert PAIR not in repr(logs)
