"""The standby lags (its replay is held back an hour): a user who posts and reloads still sees their message.

perf.replica lets history and room-list reads use the standby only when it
has replayed everything the primary had committed when the read began. While
it lags, those reads go to the primary, so the writer's reload shows the new
message (a post through the API and a send over the WebSocket alike), and so
does everyone else's. When the standby catches up it serves them again.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.cluster.conftest import PASSWORD, ClusterReader, ClusterUnderTest, record, run
from tests.waiting import wait_until


def login(base: str, username: str) -> httpx.Client:
    """A browser's session, logged in through HAProxy with the log-in form."""
    client = httpx.Client(base_url=base, timeout=20)
    page = client.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    done = client.post("/login/", data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token})
    assert done.status_code == 302, done.text[:500]
    return client


@pytest.mark.timeout(300)
def test_a_user_who_posts_and_reloads_sees_their_message_while_the_standby_lags(cluster: ClusterUnderTest) -> None:
    room = cluster.new_room("replication-lag")
    c = cluster.cluster
    status, _, body = cluster.http("GET", f"/api/v1/rooms/{room}", token=cluster.tokens["alice"])
    slug = json.loads(body)["slug"]
    page_path = f"/p/cluster/r/{slug}/"
    history = f"/api/v1/rooms/{room}/messages"
    browser = login(f"http://127.0.0.1:{cluster.port}", "alice")

    def history_ids(token: str, query: str = "") -> list[int]:
        status, _, body = cluster.http("GET", history + query, token=token)
        assert status == 200, body
        return [m["id"] for m in json.loads(body)["items"]]

    try:
        c.standby_replay_delay("1h")
        reads = 0

        # A post through the API, then a reload: the API's newest page, its forward page, the room page.
        status, _, body = cluster.http("POST", history, token=cluster.tokens["alice"], body={"body": "posted while the standby lags"})
        assert status == 201, body
        posted = json.loads(body)["id"]
        assert not cluster.standby_rows(f"SELECT 1 FROM chat_message WHERE id = {posted}"), "the standby is not lagging"
        scans = cluster.standby_message_scans()
        assert posted in history_ids(cluster.tokens["alice"])
        assert posted in history_ids(cluster.tokens["alice"], "?after=0")
        page = browser.get(page_path)
        assert page.status_code == 200 and "posted while the standby lags" in page.text
        # Everyone else's reads see it too: the standby answers nothing it has not replayed.
        assert posted in history_ids(cluster.tokens["bob"], "?after=0")
        reads += 4

        # A send over the WebSocket, then a reload.
        async def send_over_socket() -> int:
            alice = ClusterReader("alice", cluster.tokens["alice"], room)
            await alice.connect(cluster.port, resume=False)
            ack = await alice.send("sent-while-lagging")
            await alice.sock.close()
            assert ack["type"] == "message.ack", ack
            return ack["id"]

        sent = run(send_over_socket())
        page = browser.get(page_path)
        assert page.status_code == 200 and "sent-while-lagging" in page.text
        assert {posted, sent} <= set(history_ids(cluster.tokens["alice"], "?after=0"))
        reads += 2

        # All of that came from the primary: the standby has neither message and ran no history read.
        lag_bytes = cluster.primary_rows(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), replay_lsn) FROM pg_stat_replication"
        )[0][0]
        assert cluster.standby_message_scans() == scans
        assert not cluster.standby_rows(f"SELECT 1 FROM chat_message WHERE id IN ({posted}, {sent})")

        # Replay again: the standby catches up and serves the same reads.
        caught = time.monotonic()
        c.standby_replay_delay("0")
        wait_until(cluster.standby_caught_up, timeout=60, interval=0.1, message="the standby did not catch up")
        caught = time.monotonic() - caught

        def standby_serves_both() -> bool:
            before = cluster.standby_message_scans()
            ids = history_ids(cluster.tokens["bob"], "?after=0")
            return {posted, sent} <= set(ids) and cluster.standby_message_scans() > before

        wait_until(standby_serves_both, timeout=30, interval=0.2, message="the standby did not serve history again")
        record(
            "postgres standby lagging",
            reads_after_own_write=reads,
            reads_missing_own_write=0,
            standby_behind_bytes=int(lag_bytes),
            standby_caught_up_after_delay_removed_s=round(caught, 2),
        )
    finally:
        browser.close()
        c.standby_replay_delay("0")
        wait_until(cluster.standby_caught_up, timeout=60, interval=0.1, message="the standby did not catch up")
