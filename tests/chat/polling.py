"""A reader that polls a room for "everything after the highest id I have" (commit-order tests)."""

from __future__ import annotations

import threading

from django.db import connections

from chat.selectors import history as history_selectors


def poll_after_highest(room_id: int, done: threading.Event, seen: list[int]) -> None:
    """Append every id the polls return to ``seen``, until ``done`` is set and a poll finds nothing.

    If a lower id could commit after a higher one, this reader would skip it forever.
    """
    last = 0
    try:
        while True:
            finished = done.is_set()
            batch = history_selectors.messages_after(room_id=room_id, after_id=last, limit=1000)
            for m in batch:
                seen.append(m.id)
                last = m.id
            if finished and not batch:
                return
    finally:
        connections.close_all()
