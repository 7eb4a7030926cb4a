#!/bin/sh
# Runs once, when the postgres image initialises pg-primary: lets the standby stream from it.
set -eu
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
