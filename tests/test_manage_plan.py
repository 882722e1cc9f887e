"""The M→N coverage planner: single-recorder and site failures, capacity, suggestions.

``rmfproxy plan`` is run as a subprocess where the exit code, the text and the absence
of secrets matter; the pure :func:`rmfproxy.manage.plan.plan` everywhere else.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rmfproxy.config import ConfigError, parse_config_offline
from rmfproxy.manage.plan import PlanReport, plan
from rmfproxy.manage.suggest import SpareSpec

ROOT = Path(__file__).resolve().parent.parent
SITE_4TO1 = ROOT / "config" / "site-4to1.yaml"
PRIMARIES = {"nvr-a": 3, "nvr-b": 2, "nvr-c": 4, "nvr-d": 2}


def layout() -> dict[str, Any]:
    """config/site-4to1.yaml as data, to change in a test."""
    data = yaml.safe_load(SITE_4TO1.read_text())
    assert isinstance(data, dict)
    return data


def planned(data: dict[str, Any], **kwargs: Any) -> PlanReport:
    return plan(parse_config_offline(copy.deepcopy(data)), **kwargs)


def run_plan(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``rmfproxy plan`` in a subprocess with no RMF_* variable: it must need no secret."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RMF_")}
    return subprocess.run(
        [sys.executable, "-m", "rmfproxy", "plan", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**clean, **(env or {})},
    )


def write(tmp_path: Path, data: dict[str, Any], name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def scenario(report: PlanReport, kind: str, name: str) -> Any:
    return next(s for s in report.scenarios if s.kind == kind and s.name == name)


def load_of(loads: Any, recorder: str) -> Any:
    return next(load for load in loads if load.recorder == recorder)


# the 4:1 layout -------------------------------------------------------------------


def test_4to1_every_single_recorder_failure_is_covered_and_the_spare_carries_11() -> None:
    report = planned(layout())
    assert report.ok and report.exit_code == 0 and report.uncovered == ()
    normal = {load.recorder: load for load in report.recorders}
    assert normal["nvr-spare"].streams == 11
    assert normal["nvr-spare"].mbps == 9 * 4 + 1 + 6  # c-fence 1, d-server-room 6
    assert normal["nvr-spare"].active == 0 and normal["nvr-spare"].over == ()
    for primary, cameras in PRIMARIES.items():
        s = scenario(report, "recorder", primary)
        assert s.ok and s.decides
        assert len(s.failovers) == cameras
        assert {(f.from_recorder, f.to_recorder) for f in s.failovers} == {(primary, "nvr-spare")}
        spare = load_of(s.loads, "nvr-spare")
        # Hot standby: the spare already served all 11 streams, it now is active for more.
        assert (spare.streams, spare.active) == (11, cameras)
        assert primary not in {load.recorder for load in s.loads}
    s = scenario(report, "recorder", "nvr-spare")
    assert s.failovers == () and s.ok


def test_4to1_cli_exit_code_text_and_json_need_no_secret() -> None:
    proc = run_plan(SITE_4TO1)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    spare_row = next(line for line in lines if line.startswith("nvr-spare "))
    assert spare_row.split()[:3] == ["nvr-spare", "datacenter", "11"]
    assert "a-entrance  nvr-a -> nvr-spare" in proc.stdout
    assert lines[-1].startswith("OK: every single-recorder failure")

    proc = run_plan(SITE_4TO1, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["uncovered"] == []
    spare = next(r for r in report["recorders"] if r["recorder"] == "nvr-spare")
    assert spare["streams"] == 11 and spare["capacity"] == {"cameras": 16, "mbps": 64.0}
    kinds = {(s["kind"], s["name"]) for s in report["scenarios"]}
    assert ("recorder", "nvr-c") in kinds and ("site", "perimeter") in kinds


def test_plan_reads_no_password_file_and_no_environment(tmp_path: Path) -> None:
    data = layout()
    # dock-display's password file does not exist here and no RMF_* variable is set:
    # `rmfproxy check` would refuse this, the planner does not read secrets at all.
    assert not Path(data["rtsp"]["users"][1]["password_file"]).exists()
    proc = run_plan(write(tmp_path, data))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# uncovered cameras ----------------------------------------------------------------


def test_without_the_spare_on_one_primarys_cameras_plan_fails_naming_them(
    tmp_path: Path,
) -> None:
    data = layout()
    for key in ("b-dock-1", "b-dock-2"):
        data["cameras"][key]["sources"] = data["cameras"][key]["sources"][:1]
    report = planned(data)
    assert not report.ok
    assert report.uncovered == ("b-dock-1", "b-dock-2")
    s = scenario(report, "recorder", "nvr-b")
    assert [(f.camera, f.to_source) for f in s.failovers] == [
        ("b-dock-1", None),
        ("b-dock-2", None),
    ]
    assert all(scenario(report, "recorder", r).ok for r in ("nvr-a", "nvr-c", "nvr-d"))
    errors = [f for f in report.findings if f.severity == "error"]
    assert [(f.kind, f.cameras, f.recorders) for f in errors] == [
        ("uncovered", ("b-dock-1", "b-dock-2"), ("nvr-b",))
    ]

    proc = run_plan(write(tmp_path, data))
    assert proc.returncode == 1
    assert "when nvr-b fails, 2 camera(s) have no source left: b-dock-1, b-dock-2" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "FAILED: 1 error(s); uncovered: b-dock-1, b-dock-2"


def test_two_sources_on_one_recorder_are_one_point_of_failure() -> None:
    data = layout()
    # a-lobby's "standby" is a second channel of nvr-a itself.
    data["cameras"]["a-lobby"]["sources"][1] = {
        "name": "nvr-a-sub",
        "url": "rtsp://192.0.2.11:554/Streaming/Channels/202",
    }
    data["recorders"]["nvr-a-sub"] = {"site": "bldg-a"}
    report = planned(data)
    assert "a-lobby" not in report.uncovered  # a recorders entry makes it another recorder
    del data["recorders"]["nvr-a-sub"]
    data["recorders"]["192.0.2.11:554"] = data["recorders"].pop("nvr-a")
    for cam in data["cameras"].values():
        if cam["sources"][0].get("name") == "nvr-a":
            del cam["sources"][0]["name"]  # nvr-a is now known by host:port only
    report = planned(data)
    assert report.uncovered == ("a-lobby",)
    s = scenario(report, "recorder", "192.0.2.11:554")
    assert next(f for f in s.failovers if f.camera == "a-lobby").to_source is None


def test_source_not_in_recorders_is_its_urls_host_and_port() -> None:
    data = layout()
    del data["recorders"]["nvr-c"]
    report = planned(data)
    assert report.ok
    names = [load.recorder for load in report.recorders]
    assert "192.0.2.13:554" in names and "nvr-c" not in names
    note = next(f for f in report.findings if f.kind == "recorder-undeclared")
    assert note.recorders == ("192.0.2.13:554",)
    assert "192.0.2.13:554 (nvr-c)" in note.message
    unknown = next(f for f in report.findings if f.kind == "capacity-unknown")
    assert unknown.recorders == ("192.0.2.13:554",)


def test_config_without_recorders_section_is_planned_by_host_and_port() -> None:
    proc = run_plan(ROOT / "config" / "site-single.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "192.0.2.10:554 (nvr-main)" in proc.stdout
    assert "no recorder has a site: site failures not planned" in proc.stdout


# capacity -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "over"),
    [({"cameras": 8, "mbps": 64}, "11 streams > 8"), ({"mbps": 40}, "43 Mbit/s > 40")],
)
def test_capacity_overflow_is_an_error(
    tmp_path: Path, capacity: dict[str, float], over: str
) -> None:
    data = layout()
    data["recorders"]["nvr-spare"]["capacity"] = capacity
    report = planned(data)
    assert not report.ok and report.uncovered == ()
    finding = next(f for f in report.findings if f.severity == "error")
    assert finding.kind == "over-capacity" and finding.recorders == ("nvr-spare",)
    assert over in finding.message
    # Failovers add no stream: the spare is over in normal operation and in every failure.
    assert load_of(report.recorders, "nvr-spare").over == (over,)
    for primary in PRIMARIES:
        assert not scenario(report, "recorder", primary).ok
    proc = run_plan(write(tmp_path, data))
    assert proc.returncode == 1
    assert f"OVER ({over})" in proc.stdout


def test_capacity_and_recorders_are_validated_with_field_names(tmp_path: Path) -> None:
    data = layout()
    data["recorders"]["nvr-a"]["capacity"] = {"cameras": 0, "mbps": -1}
    data["recorders"]["nvr-b"]["rack"] = 7
    data["recorders"]["nvr-c"]["capacity"] = {}
    data["cameras"]["a-lobby"]["bitrate_mbps"] = 0
    with pytest.raises(ConfigError) as info:
        parse_config_offline(data)
    problems = dict(info.value.problems)
    assert problems["recorders.nvr-a.capacity.cameras"] == "Input should be greater than 0"
    assert problems["recorders.nvr-a.capacity.mbps"] == "Input should be greater than 0"
    assert problems["recorders.nvr-b.rack"] == "unknown field"
    assert problems["recorders.nvr-c.capacity"].startswith("give cameras, mbps or both")
    assert problems["cameras.a-lobby.bitrate_mbps"] == "Input should be greater than 0"
    proc = run_plan(write(tmp_path, data))
    assert proc.returncode == 2
    assert "recorders.nvr-b.rack: unknown field" in proc.stderr


# sites ----------------------------------------------------------------------------


def test_site_failure_is_reported_and_decides_only_when_strict(tmp_path: Path) -> None:
    data = layout()
    data["recorders"]["nvr-spare"]["site"] = "bldg-a"  # the spare moved next to nvr-a
    report = planned(data)
    assert report.ok  # every single recorder failure is still covered
    s = scenario(report, "site", "bldg-a")
    assert s.failed == ("nvr-a", "nvr-spare") and not s.decides
    assert s.uncovered == ("a-entrance", "a-lobby", "a-stairs")
    finding = next(f for f in report.findings if f.kind == "site-uncovered")
    assert finding.severity == "warning"
    assert finding.cameras == ("a-entrance", "a-lobby", "a-stairs")
    # The other cameras lose their standby but keep their primaries.
    assert load_of(s.loads, "nvr-b").active == 2

    strict = planned(data, strict_sites=True)
    assert not strict.ok and strict.uncovered == ("a-entrance", "a-lobby", "a-stairs")
    path = write(tmp_path, data)
    proc = run_plan(path)
    assert proc.returncode == 0
    assert "site bldg-a (nvr-a, nvr-spare) fails: 3 camera(s) fail over, 3 UNCOVERED (flagged)" in (
        proc.stdout
    )
    assert "WARNING when site bldg-a fails" in proc.stdout
    proc = run_plan(path, "--strict-sites")
    assert proc.returncode == 1
    assert "ERROR   when site bldg-a fails" in proc.stdout


# suggestions ----------------------------------------------------------------------


def no_spare() -> dict[str, Any]:
    data = layout()
    for cam in data["cameras"].values():
        cam["sources"] = cam["sources"][:1]
    del data["recorders"]["nvr-spare"]
    return data


def test_suggest_on_a_config_without_spare_proposes_the_right_number(tmp_path: Path) -> None:
    data = no_spare()
    report = planned(data, spares=SpareSpec())
    assert report.uncovered == tuple(data["cameras"])
    sug = report.suggestion
    assert sug is not None
    # Capacity of the largest existing recorder (nvr-a, 16 streams / 64 Mbit/s): one spare.
    assert (sug.capacity.cameras, sug.capacity.mbps) == (16, 64)
    assert "nvr-a" in sug.capacity_from
    assert len(sug.spares) == 1 and sug.optimal
    assert sug.spares[0].cameras == tuple(data["cameras"]) and sug.spares[0].mbps == 43
    assert sug.remaining == ()  # planned again with the spare: nothing left

    assert len(planned(data, spares=SpareSpec(cameras=4)).suggestion.spares) == 3  # type: ignore[union-attr]
    by_rate = planned(data, spares=SpareSpec(mbps=20)).suggestion
    assert by_rate is not None and len(by_rate.spares) == 3 and by_rate.lower_bound == 3
    assert all(s.mbps <= 20 for s in by_rate.spares)

    proc = run_plan(write(tmp_path, data), "--suggest", "--spare-cameras", "4")
    assert proc.returncode == 1  # the suggestion does not change the verdict on the file
    assert "Suggestion: 3 new redundant recorder(s) (fewest possible" in proc.stdout
    assert "new-spare-3" in proc.stdout and "new-spare-4" not in proc.stdout
    assert "planned again with these spares: no error left" in proc.stdout
    proc = run_plan(write(tmp_path, data), "--suggest", "--json")
    assert json.loads(proc.stdout)["suggestion"]["spares_needed"] == 1


def test_suggest_exact_search_beats_first_fit_decreasing() -> None:
    # Rates 5 4 3 3 3 2 into spares of 10 Mbit/s: first-fit decreasing needs 3
    # ({5 4} {3 3 3} {2}), two suffice ({5 3 2} {4 3 3}).
    rates = [5, 4, 3, 3, 3, 2]
    data = {
        "cameras": {
            f"cam{i}": {"sources": [{"url": f"rtsp://192.0.2.1/{i}"}], "bitrate_mbps": rate}
            for i, rate in enumerate(rates)
        }
    }
    report = planned(data, spares=SpareSpec(cameras=100, mbps=10))
    sug = report.suggestion
    assert sug is not None
    assert len(sug.spares) == 2 and sug.optimal and sug.method == "exact search"
    assert sorted(s.mbps for s in sug.spares) == [10, 10]
    assert sug.remaining == ()


def test_suggest_respects_sites_when_strict() -> None:
    data = no_spare()
    spec = SpareSpec(sites=("bldg-a", "docks"))
    loose = planned(data, spares=spec).suggestion
    assert loose is not None and [s.site for s in loose.spares] == ["bldg-a"]
    sug = planned(data, strict_sites=True, spares=spec).suggestion
    assert sug is not None and sug.unplaceable == () and sug.remaining == ()
    for spare in sug.spares:
        for cam in spare.cameras:
            primary = data["cameras"][cam]["sources"][0]["name"]
            assert data["recorders"][primary]["site"] != spare.site, (cam, spare.site)
    # bldg-a's cameras cannot go to a spare in bldg-a: with only that site they stay out.
    only_a = planned(data, strict_sites=True, spares=SpareSpec(sites=("bldg-a",))).suggestion
    assert only_a is not None
    assert [c for c, _ in only_a.unplaceable] == ["a-entrance", "a-lobby", "a-stairs"]
    assert only_a.remaining is not None
    assert only_a.remaining[0].startswith("when nvr-a fails, 3 camera(s) have no source left")


def test_suggest_moves_standby_streams_off_an_overloaded_spare() -> None:
    data = layout()
    data["recorders"]["nvr-spare"]["capacity"] = {"cameras": 9, "mbps": 64}
    sug = planned(data, spares=SpareSpec()).suggestion
    assert sug is not None and len(sug.spares) == 1 and sug.unfixable == ()
    moved = {d.camera: d.replaces for d in sug.demands}
    assert len(moved) == 2 and set(moved.values()) == {"nvr-spare"}
    assert "d-server-room" in moved  # the largest bitrate goes first
    assert "move its nvr-spare source to new-spare-1" in sug.to_text()
    assert sug.remaining == ()  # nvr-spare back within 9 streams, everything covered

    data["recorders"]["nvr-a"]["capacity"] = {"cameras": 2}  # nvr-a holds 3 primaries
    sug = planned(data, spares=SpareSpec(cameras=16, mbps=64)).suggestion
    assert sug is not None
    assert any(p.startswith("nvr-a stays over its capacity") for p in sug.unfixable)
    assert sug.remaining is not None and any("nvr-a serves 3 streams" in e for e in sug.remaining)


def test_pending_cameras_are_noted() -> None:
    data = layout()
    data["cameras"]["c-fence"]["pending"] = True
    report = planned(data)
    assert report.ok
    note = next(f for f in report.findings if f.kind == "pending")
    assert note.cameras == ("c-fence",) and note.severity == "note"


async def test_the_api_serves_the_plan_of_the_running_config() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from rmfproxy.app import Proxy
    from rmfproxy.config import parse_config

    def cam(n: int, standby: bool = True) -> dict[str, object]:
        sources = [{"url": f"rtsp://127.0.0.1:1/{n}", "name": "nvr-a"}]
        if standby:
            sources.append({"url": f"rtsp://127.0.0.2:1/{n}", "name": "spare"})
        return {"sources": sources}

    recorders = {"nvr-a": {"site": "a"}, "spare": {"site": "dc"}}
    for cameras, ok in (({"c1": cam(1), "c2": cam(2)}, True), ({"c1": cam(1, False)}, False)):
        proxy = Proxy(parse_config({"cameras": cameras, "recorders": recorders}))
        assert proxy.api is not None
        client: TestClient[Any, Any] = TestClient(TestServer(proxy.api.app, host="127.0.0.1"))
        await client.start_server()
        try:
            r = await client.get("/api/v1/plan")
            body = await r.json()
        finally:
            await client.close()
        assert r.status == 200 and body["ok"] is ok and body["cameras"] == len(cameras)
        assert body["uncovered"] == ([] if ok else ["c1"])
