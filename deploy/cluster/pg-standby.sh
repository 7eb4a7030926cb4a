#!/bin/sh
# pg-standby's entrypoint: on first start, clone pg-primary with pg_basebackup
# (-R: it starts as a hot standby streaming from it), then run PostgreSQL.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_basebackup -h pg-primary -U "$POSTGRES_USER" -D "$PGDATA" -R -X stream -c fast; do
    echo "pg-primary not ready; retrying"
    rm -rf "${PGDATA:?}"/*
    sleep 2
  done
  chmod 700 "$PGDATA"
fi
exec postgres -c shared_preload_libraries=pg_stat_statements
