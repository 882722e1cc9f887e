import asyncio

import rmfproxy


def test_version() -> None:
    assert rmfproxy.__version__.count(".") == 2


async def test_loop_runs() -> None:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 42)
    assert await fut == 42
