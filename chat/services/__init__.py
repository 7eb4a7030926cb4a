"""Every write to rooms, messages, read state, users and API tokens, by subject.

* messages: post, edit, delete (the one message writer);
* rooms: read markers, rooms, room members;
* accounts: users and their API tokens (issue and revoke).

Real-time events are published with ``transaction.on_commit`` only: a write
that rolls back never reaches a socket.
"""
