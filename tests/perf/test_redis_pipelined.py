"""perf.redis.pipelined: the commands of every caller in one turn of the loop go as one pipeline (real Redis)."""

from __future__ import annotations

import asyncio

import pytest
import redis

from chatsite import env
from perf.redis import pipelined

pytestmark = pytest.mark.skipif(not env.REDIS_URL, reason="needs REDIS_URL")


async def test_callers_in_one_turn_share_one_round_trip_and_each_gets_its_own_results():
    keys = [f"test:pipelined:{i}" for i in range(50)]

    async def one(i: int) -> list:
        return await pipelined(lambda pipe: (pipe.set(keys[i], i), pipe.incr(keys[i]), pipe.get(keys[i])))

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert [r[1:] for r in results] == [[i + 1, str(i + 1).encode()] for i in range(50)]
    # A second turn: a new pipeline (the first was sent and forgotten).
    assert await pipelined(lambda pipe: pipe.delete(*keys)) == [50]


async def test_a_failed_command_fails_only_its_caller():
    await pipelined(lambda pipe: pipe.set("test:pipelined:text", "not a number"))
    bad, good = await asyncio.gather(
        pipelined(lambda pipe: pipe.incr("test:pipelined:text")),
        pipelined(lambda pipe: pipe.incr("test:pipelined:count")),
        return_exceptions=True,
    )
    assert isinstance(bad, redis.ResponseError) and good == [1]
    await pipelined(lambda pipe: pipe.delete("test:pipelined:text", "test:pipelined:count"))
