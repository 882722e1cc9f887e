"""Simulated recorders: identical access units at the same moments on two recorders, each with
its own SSRC; faults injectable from tests, over the control API and from the command line."""

from __future__ import annotations

import asyncio

import pytest

from rmfproxy.cli import main
from rmfproxy.sim.probe import read_rtsp
from rmfproxy.sim.runner import SimCluster, SimSpec


@pytest.mark.asyncio(loop_factories=["uvloop"])  # e2e-sized: the production loop
async def test_two_recorders_same_frames_same_moments() -> None:
    spec = SimSpec(recorders=[("r1", 0), ("r2", 0)], cameras=["cam"], seconds=1.0)
    async with SimCluster(spec) as sim:
        a, b = await asyncio.gather(
            asyncio.to_thread(read_rtsp, sim.url("r1", "cam"), seconds=3.0),
            asyncio.to_thread(read_rtsp, sim.url("r2", "cam"), seconds=3.0),
        )
        cam1, cam2 = sim.recorders["r1"].cameras["cam"], sim.recorders["r2"].cameras["cam"]
        assert cam1.ssrc(0) != cam2.ssrc(0)
    assert a.consecutive() and b.consecutive() and a.decode_errors == b.decode_errors == 0
    at_a = dict(zip(a.counters, a.arrivals, strict=True))
    at_b = dict(zip(b.counters, b.arrivals, strict=True))
    common = set(at_a) & set(at_b)
    assert len(common) > 50
    skew = sorted(abs(at_a[c] - at_b[c]) for c in common)
    assert skew[len(skew) // 2] < 0.02, f"median skew {skew[len(skew) // 2]:.3f}s"


async def test_faults_from_api_and_cli() -> None:
    spec = SimSpec(recorders=[("r1", 0)], cameras=["cam"], seconds=1.0, control="127.0.0.1:0")
    async with SimCluster(spec) as sim:
        assert sim.control_url is not None
        ctl = sim.control_url.removeprefix("http://")
        rec = sim.recorders["r1"]
        rc = await asyncio.to_thread(main, ["fault", "--control", ctl, "r1", "freeze"])
        assert rc == 0 and rec.faults.frozen
        sent = rec.cameras["cam"].frames_sent
        await asyncio.sleep(0.3)
        assert rec.cameras["cam"].frames_sent == sent  # frozen: nothing sent
        rc = await asyncio.to_thread(main, ["fault", "--control", ctl, "r1", "drop", "0.5"])
        assert rc == 0 and rec.faults.drop == 0.5
        rc = await asyncio.to_thread(main, ["fault", "--control", ctl, "r1", "clear"])
        assert rc == 0 and not rec.faults.frozen and rec.faults.drop == 0
        rc = await asyncio.to_thread(main, ["fault", "--control", ctl, "nope", "freeze"])
        assert rc == 1
        rc = await asyncio.to_thread(main, ["fault", "--control", ctl, "r1", "explode"])
        assert rc == 1
        await rec.apply("stall")
        assert rec.server.fault_stall_rtsp
        await rec.apply("unstall")
        port = rec.port
        await rec.restart(0.2)
        assert rec.port == port
