"""Fuzz one parser target: ``python fuzz/run.py TARGET --runs N [--corpus DIR]``.

Engines: ``atheris`` (coverage-guided libFuzzer; the default when the module
is installed) and ``mutate`` (random mutation of the seeds, standard library
only; what CI's smoke test uses). Seeds come from ``fuzz/corpus/TARGET``
unless ``--corpus`` says otherwise; a run's scratch space is
``fuzz/.work/TARGET`` (the corpus atheris grows, each finding's smallest input
and trace under ``crashes/``, the slowest inputs under ``slowest/``,
``stats.json``). The seed corpus is only read.

``--minimize OUT`` merges the seeds and the grown corpus into OUT, keeping
only inputs that add coverage; with OUT = fuzz/corpus/TARGET it adds to the
seeds what a long run found (file names are SHA-1s).

``--replay FILE...`` runs the given inputs once each (no instrumentation),
prints any exception with its traceback and each input's minimum CPU time
(of the target's ``timed`` parse).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz import mutate
from fuzz.runner import (
    BOUND_MS,
    FUZZ_DIR,
    Runner,
    classify,
    cpu_time_ms,
    load_corpus,
    timed_function,
)
from fuzz.targets import NAMES

PROGRESS_EVERY_S = 60.0


def _dictionary_file(tokens: tuple[bytes, ...], path: Path) -> None:
    """Write ``tokens`` in libFuzzer's dictionary format."""
    lines = []
    for t in tokens:
        esc = "".join(
            chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02x}" for b in t
        )
        lines.append(f'"{esc}"')
    path.write_text("\n".join(lines) + "\n")


def _retime_subprocess(target: str, work: Path) -> list[tuple[float, bytes]]:
    """Re-time the kept slowest and over-bound inputs in a fresh, uninstrumented interpreter."""
    files = sorted((work / "slowest").glob("*.bin")) + sorted((work / "over_bound").glob("*.bin"))
    if not files:
        return []
    out = work / "retime.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), target, "--json", str(out), "--replay"]
    subprocess.run([*cmd, *map(str, files)], check=False, stdout=subprocess.DEVNULL)
    rows = json.loads(out.read_text())
    timed = [(r["cpu_ms"], Path(r["file"]).read_bytes()) for r in rows]
    return sorted(timed, key=lambda t: -t[0])


def _report(stats: dict[str, Any]) -> None:
    print(json.dumps(stats, indent=2))
    print(
        f"{stats['target']}: {stats['inputs']} inputs, {stats['crashes']} crashes, "
        f"{stats['invariant_failures']} invariant failures "
        f"({stats['distinct_findings']} distinct), slowest {stats.get('slowest_cpu_ms')} ms CPU "
        f"({stats['slowest_wall_ms']} ms wall), {stats['inputs_per_s']} inputs/s",
        file=sys.stderr,
    )


def run_mutate(args: argparse.Namespace, work: Path) -> int:
    """The built-in engine, start to finish."""
    from fuzz.runner import load_target

    module = load_target(args.target)
    runner = Runner(args.target, module)
    corpus = load_corpus(args.corpus)
    mutate.run(runner, corpus, args.runs, args.seed, args.max_len)
    retimed = runner.retime()
    stats = runner.stats(retimed) | {"engine": "mutate", "seed": args.seed}
    runner.save(work, stats)
    _report(stats)
    return 1 if runner.findings or stats["over_bound_cpu"] else 0


def run_atheris(args: argparse.Namespace, work: Path) -> int:
    """The coverage-guided engine; exits the process when ``--runs`` inputs have run."""
    import atheris

    # The str hook gives libFuzzer the constants str methods compare to. Not the RegEx
    # hook: atheris 2.3's pattern proxy rejects match(text, pos), which auth.py uses.
    atheris.enabled_hooks.add("str")
    with atheris.instrument_imports(include=["rmfproxy"]):
        from fuzz.runner import load_target

        module = load_target(args.target)
    runner = Runner(args.target, module)
    grown = work / "corpus"
    grown.mkdir(parents=True, exist_ok=True)
    dict_path = work / "dict.txt"
    _dictionary_file(tuple(getattr(module, "DICTIONARY", ())), dict_path)
    max_len = args.max_len or int(getattr(module, "MAX_LEN", 4096))
    last = [time.monotonic()]

    def finish() -> None:
        runner.save(work, runner.stats())
        retimed = _retime_subprocess(args.target, work)
        stats = runner.stats(retimed) | {"engine": "atheris", "seed": args.seed}
        runner.save(work, stats)
        _report(stats)
        sys.stdout.flush()
        sys.stderr.flush()

    def one_input(data: bytes) -> None:
        runner.run_one(data)
        now = time.monotonic()
        if now - last[0] > PROGRESS_EVERY_S:
            last[0] = now
            s = runner.stats()
            runner.save(work, s)
            print(
                f"[{args.target}] {s['inputs']} inputs {s['inputs_per_s']}/s "
                f"crashes={s['crashes']} invariants={s['invariant_failures']} "
                f"slowest_wall={s['slowest_wall_ms']}ms",
                file=sys.stderr,
                flush=True,
            )
        if runner.inputs >= args.runs:
            finish()
            os._exit(1 if runner.findings else 0)

    argv = [
        sys.argv[0],
        str(grown),
        str(args.corpus),
        "-runs=-1",
        f"-max_len={max_len}",
        f"-seed={args.seed}",
        f"-dict={dict_path}",
        "-timeout=30",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={work}/",
        "-print_final_stats=0",
    ]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    return 0  # not reached: Fuzz() does not return


def minimize(args: argparse.Namespace, work: Path, extra: list[str]) -> int:
    """libFuzzer's merge: keep the inputs of the seed and grown corpora that add coverage.

    libFuzzer runs the merge in a child process started through the shell from
    argv[0], so argv[0] is this command line with ``--minimize-child``; the child
    gets libFuzzer's flags appended and hands them back to atheris.
    """
    import shlex

    import atheris

    with atheris.instrument_imports(include=["rmfproxy"]):
        from fuzz.runner import load_target

        module = load_target(args.target)
    runner = Runner(args.target, module)
    if args.minimize_child:
        argv = [sys.argv[0], *extra]
    else:
        out = args.minimize
        out.mkdir(parents=True, exist_ok=True)
        me = [sys.executable, str(Path(__file__).resolve()), args.target, "--minimize-child"]
        max_len = args.max_len or int(getattr(module, "MAX_LEN", 4096))
        sources = [work / "corpus"]
        if args.corpus.resolve() != out.resolve():
            sources.append(args.corpus)
        argv = [
            shlex.join(me),
            "-merge=1",
            "-use_counters=0",  # edges only: hit-count features would keep hundreds of files
            f"-max_len={max_len}",
            str(out),
            *map(str, sources),
        ]
    atheris.Setup(argv, runner.run_one)
    atheris.Fuzz()
    return 0


def replay(args: argparse.Namespace) -> int:
    """Run each given input once, report exceptions and minimum CPU times."""
    from fuzz.runner import load_target

    module = load_target(args.target)
    rows = []
    failed = 0
    for name in args.files:
        data = Path(name).read_bytes()
        row: dict[str, Any] = {"file": name, "len": len(data)}
        try:
            module.test_one_input(data)
        except Exception as exc:
            import traceback

            kind, sig, location = classify(exc)
            row |= {"kind": kind, "signature": sig, "location": location}
            failed += 1
            if not args.json:
                traceback.print_exc()
        row["cpu_ms"] = round(cpu_time_ms(timed_function(module), data, args.repeats), 3)
        failed += row["cpu_ms"] > BOUND_MS
        rows.append(row)
        if not args.json:
            print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("target", choices=NAMES)
    p.add_argument("--runs", type=int, default=100_000, help="inputs to run")
    p.add_argument("--corpus", type=Path, help="seed directory (default fuzz/corpus/TARGET)")
    p.add_argument("--engine", choices=("atheris", "mutate"), help="default: atheris if installed")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-len", type=int, help="largest input (default: the target's MAX_LEN)")
    p.add_argument("--work", type=Path, help="scratch directory (default fuzz/.work/TARGET)")
    p.add_argument("--replay", dest="files", nargs="*", help="run these inputs once each")
    p.add_argument("--repeats", type=int, default=5, help="timing repeats in --replay")
    p.add_argument("--json", help="with --replay: write the results here")
    p.add_argument(
        "--minimize",
        type=Path,
        metavar="OUT",
        help="write to OUT the seeds and grown corpus inputs that add coverage (atheris merge)",
    )
    p.add_argument("--minimize-child", action="store_true", help=argparse.SUPPRESS)
    args, extra = p.parse_known_args(argv)
    if extra and not args.minimize_child:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.files is not None:
        return replay(args)
    args.corpus = args.corpus or FUZZ_DIR / "corpus" / args.target
    work = args.work or FUZZ_DIR / ".work" / args.target
    if args.minimize or args.minimize_child:
        return minimize(args, work, extra)
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "mutate"
    return run_atheris(args, work) if engine == "atheris" else run_mutate(args, work)


if __name__ == "__main__":
    sys.exit(main())
