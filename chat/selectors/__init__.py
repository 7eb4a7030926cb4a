"""Every non-trivial read of rooms and messages, by subject.

* rooms: room access (NotFound, never Forbidden, for a room the user may not
  read) and room lists with unread counts, room members;
* unread: the rooms' unread tails, which message writers also update;
* history: messages, history pages, profiles, mentions;
* tokens: API token lookups.

Cached reads are cache-aside (perf.cache): a miss reads the database and
fills the entry, named by chat.cache_keys; writers drop or update it.
"""
