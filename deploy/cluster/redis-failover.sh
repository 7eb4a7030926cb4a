#!/bin/sh
# Sentinel's client-reconfig-script: after a failover, empty the app's database on the new primary.
#
# Writes the old primary took but never passed on, and cache invalidations that
# failed while no primary answered, would otherwise leave entries the app
# believes current (a history page without the messages of the gap). Emptied,
# the cache refills from PostgreSQL, as after a Redis restart; presence and
# rate-limit counts start again. Arguments: <master-name> <role> <state>
# <from-ip> <from-port> <to-ip> <to-port>; only the leading Sentinel acts, and
# only as the replica is promoted ("start"): at "end" the app already writes there.
set -eu
[ "$2" = "leader" ] && [ "$3" = "start" ] || exit 0
exec redis-cli -h "$6" -p "$7" -n "${CHAT_REDIS_DB:-0}" FLUSHDB ASYNC
