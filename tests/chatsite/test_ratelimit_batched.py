"""hit() counts in the process and reconciles with Redis in batches (chatsite.ratelimit.Limiter).

Against the real Redis: round trips are counted by a redis-py connection that
tallies what it sends, and two Limiter instances with their own state stand
for two server processes. Reconcile intervals run on a clock the test moves,
so nothing depends on how fast the machine is.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import pytest
import redis
from django.core.cache import cache

from chatsite import env, ratelimit


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Tally:
    round_trips = 0
    incrby = 0


def counting_client(tally: Tally) -> redis.Redis:
    """A real client on the test Redis whose connections count round trips and INCRBY commands."""

    class CountingConnection(redis.Connection):
        def pack_commands(self, commands: Any) -> Any:
            tally.incrby += sum(1 for args in commands if str(args[0]).upper() == "INCRBY")
            return super().pack_commands(commands)

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            tally.round_trips += 1
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool.from_url(env.REDIS_URL, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    client.ping()  # connect (and select the database) before counting
    tally.round_trips = tally.incrby = 0
    return client


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def allowed(limiter: ratelimit.Limiter, window: ratelimit._Window) -> bool:
    """One hit as ratelimit.hit makes it, on a given window: True when let through."""
    try:
        window.check(limiter.hit(window))
    except ratelimit.RateLimited:
        return False
    return True


def shared(window: ratelimit._Window) -> int:
    """The counter in Redis, read through the cache as usage() reads it."""
    return int(cache.get(window.key) or 0)


@pytest.fixture
def tally() -> Tally:
    return Tally()


@pytest.fixture
def clients():
    made: list[redis.Redis] = []
    yield made
    for client in made:
        client.close()


@pytest.fixture
def two_processes(clients):
    """Two limiters, as two server processes would have, on the real Redis and one clock the test moves."""

    def make() -> tuple[ratelimit.Limiter, ratelimit.Limiter, Clock]:
        clock = Clock()
        client = redis.Redis.from_url(env.REDIS_URL)
        clients.append(client)
        a = ratelimit.Limiter(client=lambda: client, reconcile_seconds=0.25, clock=clock)
        b = ratelimit.Limiter(client=lambda: client, reconcile_seconds=0.25, clock=clock)
        return a, b, clock

    return make


def test_a_send_burst_is_one_round_trip_per_interval_not_one_per_hit(settings, tally, clients):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "100000/3600"}
    client = counting_client(tally)
    clients.append(client)
    clock = Clock()
    limiter = ratelimit.Limiter(client=lambda: client, reconcile_seconds=0.25, clock=clock)
    window = ratelimit._window("probe", "burst")

    # The first hit on a counter reads the shared total before deciding: one round trip.
    assert allowed(limiter, window)
    assert tally.round_trips == 1 and shared(window) == 1
    # The rest of the interval stays in the process: no round trip, Redis unchanged.
    for _ in range(999):
        assert allowed(limiter, window)
    assert tally.round_trips == 1 and shared(window) == 1
    # Each interval then costs one round trip, whatever the number of hits.
    for interval in range(1, 11):
        clock.advance(0.25)
        for _ in range(100):
            assert allowed(limiter, window)
        assert tally.round_trips == 1 + interval
        assert shared(window) == 1000 + 100 * (interval - 1) + 1
    limiter.reconcile()
    assert shared(window) == 2000 and tally.incrby == tally.round_trips == 12


def test_one_round_trip_sends_every_dirty_counter(settings, tally, clients):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "100000/3600"}
    client = counting_client(tally)
    clients.append(client)
    clock = Clock()
    limiter = ratelimit.Limiter(client=lambda: client, reconcile_seconds=0.25, clock=clock)
    windows = [ratelimit._window("probe", f"user{i}") for i in range(50)]
    for window in windows:  # each identity's first hit reads its total
        assert allowed(limiter, window)
    first_reads = tally.round_trips
    assert first_reads == 50
    for _ in range(10):
        for window in windows:
            assert allowed(limiter, window)
    assert tally.round_trips == first_reads
    clock.advance(0.25)
    before = tally.incrby
    assert allowed(limiter, windows[0])
    # One pipeline with an INCRBY for each of the 50 counters.
    assert tally.round_trips == first_reads + 1 and tally.incrby - before == 50
    assert [shared(window) for window in windows] == [12] + [11] * 49


def test_a_group_of_identities_new_to_the_process_is_one_round_trip(settings, tally, clients):
    """A group of sends or subscribes (hit_many): one round trip reads every new counter, not one each."""
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "100000/3600"}
    client = counting_client(tally)
    clients.append(client)
    limiter = ratelimit.Limiter(client=lambda: client, reconcile_seconds=0.25, clock=Clock())
    windows = [ratelimit._window("probe", f"group{i}") for i in range(50)]
    assert limiter.hit_many(windows) == [1] * 50
    assert tally.round_trips == 1 and tally.incrby == 50
    assert [shared(window) for window in windows] == [1] * 50
    # Known counters inside the interval: no round trip at all.
    assert limiter.hit_many(windows) == [2] * 50
    assert tally.round_trips == 1


def test_a_group_decides_as_the_same_hits_one_after_another(settings, two_processes):
    """Counts in order within the group, from the shared total: the other process's hits refuse here too."""
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "3/3600"}
    a, b, _ = two_processes()
    busy, fresh = ratelimit._window("probe", "busy"), ratelimit._window("probe", "fresh")
    assert sum(allowed(b, busy) for _ in range(2)) == 2
    b.reconcile()
    counts = a.hit_many([busy, fresh, busy, fresh, fresh, fresh])
    assert counts == [3, 1, 4, 2, 3, 4]
    refused = []
    for window, count in zip([busy, fresh, busy, fresh, fresh, fresh], counts):
        try:
            window.check(count)
            refused.append(False)
        except ratelimit.RateLimited:
            refused.append(True)
    assert refused == [False, False, True, False, False, True]
    a.reconcile()
    assert shared(busy) == 4 and shared(fresh) == 4  # refused hits count, as single hits do


def test_a_single_process_is_exact_under_many_threads(settings, tally, clients):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "1000/3600"}
    client = counting_client(tally)
    clients.append(client)
    limiter = ratelimit.Limiter(client=lambda: client, reconcile_seconds=0.001)
    window = ratelimit._window("probe", "threads")
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        mine = [allowed(limiter, window) for _ in range(500)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4000
    assert results.count(True) == 1000  # exactly the limit: one process alone never overshoots
    limiter.reconcile()
    assert shared(window) == 4000  # every hit reached Redis, refused ones included, none twice
    assert tally.round_trips < 4000


def test_two_processes_together_refuse_past_the_limit_plus_what_the_other_had_not_sent(settings, two_processes):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "50/3600"}
    a, b, clock = two_processes()
    window = ratelimit._window("probe", "two")

    a_allowed = sum(allowed(a, window) for _ in range(60))
    assert a_allowed == 50  # alone, exact
    unsent_by_a = 59  # a read the total at its first hit and has counted 59 since
    assert shared(window) == 1
    b_allowed = sum(allowed(b, window) for _ in range(60))
    # b read the total (a's first hit and its own) and then counted on its own:
    # together past the limit by what a had counted and not yet sent.
    assert a_allowed + b_allowed == 50 + 49
    assert a_allowed + b_allowed - 50 <= unsent_by_a
    # One interval later each has sent its hits and read the other's: both refuse.
    clock.advance(0.25)
    assert not any(allowed(a, window) for _ in range(10))
    assert not any(allowed(b, window) for _ in range(10))
    a.reconcile()
    b.reconcile()
    assert shared(window) == 60 + 60 + 20  # every hit counted once, in Redis


def test_an_identity_new_to_a_process_starts_from_the_shared_total(settings, two_processes):
    """The first hit on a counter reads the total before deciding, even inside an interval."""
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "50/3600"}
    a, b, clock = two_processes()
    assert allowed(b, ratelimit._window("probe", "someone else"))  # b's interval has begun
    window = ratelimit._window("probe", "moved")
    assert sum(allowed(a, window) for _ in range(50)) == 50
    a.reconcile()
    assert shared(window) == 50
    # Same interval for b, but a counter it has not read: refused at once.
    assert not allowed(b, window)
    assert shared(window) == 51


def test_two_processes_under_steady_load_stay_within_two_intervals_of_the_others_hits(settings, two_processes):
    """Both serve the identity all along, with their round trips out of step: the stated tolerance."""
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "100/3600"}
    a, b, clock = two_processes()
    window = ratelimit._window("probe", "steady")
    tick = 0.01  # each process gets a hit every 10 ms: 25 hits per interval
    per_interval = round(0.25 / tick)
    assert allowed(a, window)
    clock.advance(0.13)  # b starts half an interval later
    let_through = 1
    for _ in range(400):
        let_through += allowed(b, window)
        clock.advance(tick / 2)
        let_through += allowed(a, window)
        clock.advance(tick / 2)
    # The limit is reached (no early refusals), and passed by at most what the
    # other process counts in two intervals (2 x 25 here).
    assert 100 <= let_through <= 100 + 2 * per_interval
    a.reconcile()
    b.reconcile()
    assert shared(window) == 801


def test_windows_roll_over_and_ended_ones_are_dropped(settings, clients):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "3/1"}
    client = redis.Redis.from_url(env.REDIS_URL)
    clients.append(client)
    limiter = ratelimit.Limiter(client=lambda: client, reconcile_seconds=0.25)

    def hit(ident: str) -> bool:
        window = ratelimit._window("probe", ident)
        return allowed(limiter, window)

    time.sleep(1.02 - time.time() % 1)  # the start of a window
    first = ratelimit._window("probe", "roll")
    assert [hit("roll") for _ in range(4)] == [True, True, True, False]
    assert hit("other")
    assert limiter.tracked() == 2
    assert 0 < client.ttl(cache.make_key(first.key)) <= 2  # Redis forgets it soon after the window
    time.sleep(first.end + 0.02 - time.time())
    # A new window: allowed again, and the ended window's counters are gone.
    assert [hit("roll") for _ in range(4)] == [True, True, True, False]
    assert ratelimit._window("probe", "roll").bucket == first.bucket + 1
    assert limiter.tracked() == 1


def test_fail_open_when_redis_is_unreachable_and_the_counts_are_sent_when_it_is_back(settings, caplog, clients):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "5/3600"}
    dead = redis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1, socket_timeout=1)
    live = redis.Redis.from_url(env.REDIS_URL)
    clients.extend([dead, live])
    current = [dead]
    clock = Clock()
    limiter = ratelimit.Limiter(client=lambda: current[0], reconcile_seconds=0.25, retry_seconds=2.0, clock=clock)
    window = ratelimit._window("probe", "down")

    with caplog.at_level(logging.WARNING, logger="chatsite.ratelimit"):
        # No exception but RateLimited: the process's own count still limits it.
        assert [allowed(limiter, window) for _ in range(7)] == [True] * 5 + [False] * 2
    warnings = [r for r in caplog.records if "rate limiter unavailable" in r.getMessage()]
    assert len(warnings) == 1  # one failed round trip, then no retry before retry_seconds
    clock.advance(2.0)
    current[0] = live
    assert not allowed(limiter, window)
    assert shared(window) == 8  # the hits counted while Redis was down were kept and sent


def test_the_module_hit_fails_open_without_redis(settings, caplog, clients):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "2/3600"}
    dead = redis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1, socket_timeout=1)
    clients.append(dead)
    original = ratelimit.limiter
    ratelimit.limiter = ratelimit.Limiter(client=lambda: dead)
    try:
        with caplog.at_level(logging.WARNING, logger="chatsite.ratelimit"):
            ratelimit.hit("probe", "x")
            ratelimit.hit("probe", "x")
            with pytest.raises(ratelimit.RateLimited):
                ratelimit.hit("probe", "x")
    finally:
        ratelimit.limiter = original
    assert any("rate limiter unavailable" in r.getMessage() for r in caplog.records)


def test_usage_adds_this_process_unsent_hits_and_record_is_written_at_once(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "5/300"}
    window = ratelimit._window("probe", "login")
    for _ in range(3):
        ratelimit.hit("probe", "login")
    assert shared(window) == 1  # the first hit read the total; two wait in the process
    assert ratelimit.usage(("probe", "login"))[0].count == 3
    ratelimit.record("probe", "login")
    assert shared(window) == 2  # record writes Redis at once
    ratelimit.record("probe", "login")
    (used,) = ratelimit.usage(("probe", "login"))
    assert used.count == 5 and used.exhausted
    # record's totals are what later hits in this process start from.
    with pytest.raises(ratelimit.RateLimited):
        ratelimit.hit("probe", "login")
