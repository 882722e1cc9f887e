"""The built-in engine: random mutation of a seed corpus, without coverage feedback.

It needs nothing outside the standard library, so CI's smoke test uses it;
long runs use atheris (coverage-guided) when it is installed. Mutations are
the usual byte-level ones plus two that matter for parsers: splicing in a
target's dictionary tokens, and repeating a slice many times (how quadratic
loops show up).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from fuzz.runner import Runner

INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x0D, 0x20, 0x09, 0x22, 0x24, 0x2C, 0x3B, 0x3D)


def _span(rng: random.Random, n: int) -> tuple[int, int]:
    a = rng.randrange(n + 1)
    b = min(n, a + 1 + int(rng.expovariate(1 / 8)))
    return a, b


def _mutate_once(
    buf: bytearray, rng: random.Random, others: Sequence[bytes], dictionary: Sequence[bytes]
) -> None:
    n = len(buf)
    ops = ["insert"]
    if n:
        ops += ["flip", "interesting", "delete", "repeat"]
    if dictionary:
        ops += ["token", "token"]
    if others:
        ops.append("splice")
    op = rng.choice(ops)
    if op == "flip":
        buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif op == "interesting":
        buf[rng.randrange(n)] = rng.choice(INTERESTING)
    elif op == "delete":
        a, b = _span(rng, n)
        del buf[a:b]
    elif op == "repeat":
        a, b = _span(rng, n)
        buf[b:b] = bytes(buf[a:b]) * rng.choice((2, 3, 8, 64, 512))
    elif op == "insert":
        at = rng.randrange(n + 1)
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif op == "token":
        at = rng.randrange(n + 1)
        tok = rng.choice(dictionary)
        buf[at : at + len(tok) if rng.random() < 0.5 else at] = tok
    else:
        other = rng.choice(others)
        a, b = _span(rng, len(other))
        at = rng.randrange(n + 1)
        buf[at:at] = other[a:b]


def mutate(
    data: bytes,
    rng: random.Random,
    others: Sequence[bytes],
    dictionary: Sequence[bytes],
    max_len: int,
) -> bytes:
    """One mutant of ``data``: one to four stacked mutations, at most ``max_len`` bytes."""
    buf = bytearray(data)
    for _ in range(1 + min(3, int(rng.expovariate(1.0)))):
        _mutate_once(buf, rng, others, dictionary)
    return bytes(buf[:max_len])


def run(
    runner: Runner, corpus: Sequence[bytes], runs: int, seed: int = 0, max_len: int | None = None
) -> None:
    """Run every seed once, then mutants of the seeds (and of earlier mutants) up to ``runs``.

    Mutants are at most ``max_len`` bytes (default: the target's ``MAX_LEN``).
    """
    rng = random.Random(seed)
    module = runner.module
    dictionary = tuple(getattr(module, "DICTIONARY", ()))
    max_len = max_len or int(getattr(module, "MAX_LEN", 4096))
    pool = list(corpus) or [b""]
    for data in corpus:
        if runner.inputs >= runs:
            return
        runner.run_one(data)
    while runner.inputs < runs:
        data = mutate(rng.choice(pool), rng, pool, dictionary, max_len)
        runner.run_one(data)
        # Keep some mutants so mutations stack over generations; bounded pool.
        if rng.random() < 0.02:
            if len(pool) < 2000:
                pool.append(data)
            else:
                pool[rng.randrange(len(corpus), len(pool))] = data
