"""Fuzz smoke test: each parser target of fuzz/ runs a few thousand mutants of its seed
corpus with the built-in mutator (no atheris needed) and must neither crash, break an
invariant, nor take more than 10 ms of CPU on any input.

Open findings (fuzz/findings/<target>/*.bin, each a parser bug reported to its
owner) are replayed first: while one still reproduces, its signature is allowed
in the smoke run, so a known bug does not fail every CI run, and its own test
here is an expected failure. Once fixed it passes; then move the file into
fuzz/corpus/<target>/ as a regression seed.

Timing on a shared machine: an input counts as slow only if the minimum CPU
time (``time.thread_time``, this thread only) over five runs is over the bound, so a scheduler
pause is not a slow parse.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fuzz import mutate
from fuzz.runner import BOUND_MS, FUZZ_DIR, Runner, classify, load_corpus, load_target
from fuzz.targets import NAMES

RUNS = 2500
"""Mutants per target: the eight targets take about 10 s together on one idle core."""

MAX_LEN = 4096
"""Mutants stay small: a CI run checks for crashes, long runs look for slow inputs."""

FINDINGS = FUZZ_DIR / "findings"


def _still_reproduces(path: Path) -> str | None:
    """Why the finding in ``path`` still shows (a signature or a time), or None if fixed."""
    module = load_target(path.parent.name)
    data = path.read_bytes()
    t0 = time.thread_time()
    try:
        module.test_one_input(data)
    except Exception as exc:
        return classify(exc)[1]
    ms = (time.thread_time() - t0) * 1000
    # A noisy machine can only make it slower, so one run decides "still slow";
    # under the bound it is fixed (or was never slow).
    return f"{ms:.1f} ms CPU" if ms > BOUND_MS else None


def _open_signatures(name: str) -> set[str]:
    out = set()
    for path in sorted((FINDINGS / name).glob("*.bin")):
        why = _still_reproduces(path)
        if why is not None and not why.endswith("ms CPU"):
            out.add(why)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_fuzz_smoke(name: str) -> None:
    module = load_target(name)
    known = _open_signatures(name)
    runner = Runner(name, module, keep_slowest=5)
    mutate.run(runner, load_corpus(FUZZ_DIR / "corpus" / name), RUNS, seed=1, max_len=MAX_LEN)
    assert runner.inputs == RUNS
    new = [f for f in runner.findings.values() if f.signature not in known]
    assert not new, "\n\n".join(
        f"{f.signature} ({f.count} inputs), smallest input {f.data[:300]!r}\n{f.trace}" for f in new
    )
    slow = [(ms, d) for ms, d in runner.retime(repeats=5) if ms > BOUND_MS]
    assert not slow, "\n".join(f"{ms:.1f} ms CPU on {d[:200]!r} ({len(d)} bytes)" for ms, d in slow)


@pytest.mark.parametrize(
    "path",
    sorted(p for name in NAMES for p in (FINDINGS / name).glob("*.bin")),
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_open_finding(path: Path) -> None:
    why = _still_reproduces(path)
    if why is not None:
        pytest.xfail(f"open finding {path.parent.name}/{path.name}: {why} (see fuzz/findings)")
