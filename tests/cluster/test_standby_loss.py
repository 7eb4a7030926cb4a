"""The PostgreSQL standby stops while people read history and room lists through HAProxy.

Reads that may be served by the standby (perf.replica) go to the primary from
the moment it stops: a read that meets the dying standby runs again on the
primary, and the next ones skip the standby for DATABASE_REPLICA_RETRY
seconds before they try it again. No request fails. When the standby is back
and has caught up, it serves those reads again.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import pytest

from tests.cluster.conftest import ClusterUnderTest, record, run
from tests.waiting import wait_until

WORKERS = 4


@pytest.mark.timeout(300)
def test_reads_fall_back_to_the_primary_when_the_standby_stops(cluster: ClusterUnderTest) -> None:
    room = cluster.new_room("standby-loss")
    c = cluster.cluster
    for i in range(20):
        status, _, body = cluster.http("POST", f"/api/v1/rooms/{room}/messages", token=cluster.tokens["alice"], body={"body": f"m{i}"})
        assert status == 201, body
    paths = [
        f"/api/v1/rooms/{room}/messages?after=0",  # forward pages are never cached: always a database read
        f"/api/v1/rooms/{room}/messages",
        "/api/v1/projects/cluster/rooms",
    ]
    readers = [cluster.tokens[name] for name in ("bob", "carol", "dave")]

    def standby_serves() -> bool:
        before = cluster.standby_message_scans()
        for token in readers:
            status, _, _ = cluster.http("GET", paths[0], token=token)
            assert status == 200
        return cluster.standby_message_scans() > before

    wait_until(standby_serves, timeout=30, interval=0.2, message="the standby never served history")

    results: list[tuple[float, int, float]] = []  # (start, status, seconds)
    phase: dict[str, float] = {}

    async def load(stop: asyncio.Event, worker: int) -> None:
        token = readers[worker % len(readers)]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cluster.port}", timeout=30) as client:
            n = 0
            while not stop.is_set():
                n += 1
                start = time.monotonic()
                if worker == 0 and n % 10 == 0:
                    response = await client.post(
                        f"/api/v1/rooms/{room}/messages", json={"body": f"w{n}"}, headers={"Authorization": f"Bearer {cluster.tokens['alice']}"}
                    )
                else:
                    response = await client.get(paths[n % len(paths)], headers={"Authorization": f"Bearer {token}"})
                results.append((start, response.status_code, time.monotonic() - start))
                await asyncio.sleep(0.02)

    async def scenario() -> None:
        stop = asyncio.Event()
        workers = [asyncio.create_task(load(stop, i)) for i in range(WORKERS)]
        try:
            await asyncio.sleep(1.0)
            phase["stop"] = time.monotonic()
            await asyncio.to_thread(c.pg_stop, "standby", "fast")
            phase["stopped"] = time.monotonic()
            await asyncio.sleep(6.0)  # past one DATABASE_REPLICA_RETRY: the standby is tried again, and fails again
            phase["restart"] = time.monotonic()
            await asyncio.to_thread(c.pg_start, "standby")
            await asyncio.to_thread(wait_until, c._standby_streaming, timeout=60, interval=0.2, message="standby not streaming")
            phase["streaming"] = time.monotonic()
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await asyncio.gather(*workers)

    try:
        run(scenario())
        failed = [(round(start - phase["stop"], 2), status) for start, status, _ in results if status >= 300]
        assert not failed, failed
        during = [seconds for start, _, seconds in results if phase["stop"] <= start <= phase["restart"]]
        assert during, "no request ran while the standby was down"
        # Back: once it has caught up, the standby serves those reads again.
        back = wait_until(lambda: standby_serves() and time.monotonic(), timeout=60, interval=0.5, message="the standby did not serve again")
        record(
            "postgres standby stopped",
            requests=len(results),
            failed=len(failed),
            requests_while_down=len(during),
            slowest_while_down_s=round(max(during), 3),
            median_s=round(statistics.median(seconds for _, _, seconds in results), 4),
            standby_serving_again_after_restart_s=round(back - phase["restart"], 2),
        )
    finally:
        if not c.pg_running("standby"):
            c.pg_start("standby")
        wait_until(c._standby_streaming, timeout=60, interval=0.2, message="standby not streaming")
