"""Two background workers, one per app node: each @mention is notified once, not once per worker.

The pub/sub channel layer hands every job on the background channel to every
worker listening; the first to claim it in the shared cache does it
(chat.background.claim).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from tests.cluster.conftest import ClusterUnderTest, record, run
from tests.wsclient import ChatSocket

MENTIONS = 5


@pytest.mark.timeout(120)
def test_each_mention_is_notified_once_whatever_the_number_of_workers(cluster: ClusterUnderTest) -> None:
    room = cluster.new_room("mentions")
    c = cluster.cluster
    assert all(c.running(f"{c.node_name(i)}-worker") for i in range(len(c.ports.nodes)))

    async def scenario() -> Counter:
        bob = await ChatSocket.open(cluster.port, cluster.tokens["bob"])
        posted = []
        for i in range(MENTIONS):
            status, _, body = await asyncio.to_thread(
                cluster.http, "POST", f"/api/v1/rooms/{room}/messages", token=cluster.tokens["alice"], body={"body": f"@bob look {i}"}
            )
            assert status == 201, body
            posted.append(json.loads(body)["id"])
        seen: Counter = Counter()
        # Until every mention has arrived, then one more second for any second copy.
        deadline = None
        while True:
            try:
                event = await bob.recv(timeout=1.0 if deadline else 30.0)
            except (asyncio.TimeoutError, TimeoutError):
                assert deadline, f"mentions missing: {sorted(set(posted) - set(seen))}"
                break
            if event["type"] == "mention":
                seen[event["message"]["id"]] += 1
                if set(seen) >= set(posted):
                    deadline = True
        await bob.close()
        return seen

    seen = run(scenario())
    assert set(seen.values()) == {1}, seen
    record("mentions with two workers", mentions=MENTIONS, notifications=sum(seen.values()))
