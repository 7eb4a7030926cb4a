# The two front-door commands: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# `make run` records and profiles every request with django-silk (/silk/, staff only).
SILKY_INTERCEPT_PERCENT ?= 100
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test venv migrate seed lint check-services clean bench bench-database bench-db bench-search bench-http bench-ws bench-actions loadtest perf-report cluster cluster-stop test-cluster

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

## make run: set everything up and serve on http://127.0.0.1:$(PORT)
## (SQLite + in-memory layer unless DATABASE_URL / REDIS_URL are set)
run: venv
	@mkdir -p var
	DJANGO_SETTINGS_MODULE=chatsite.settings.dev $(PY) manage.py migrate --no-input
	DJANGO_SETTINGS_MODULE=chatsite.settings.dev $(PY) manage.py seed_demo
	@echo "Serving on http://127.0.0.1:$(PORT)/  (Ctrl-C to stop)"
	DJANGO_SETTINGS_MODULE=chatsite.settings.dev SILKY_INTERCEPT_PERCENT=$(SILKY_INTERCEPT_PERCENT) PY=$(PY) PORT=$(PORT) scripts/serve.sh

## make test: the architecture contracts (.importlinter), then the whole suite against the real PostgreSQL and Redis
test: venv check-services
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

## make test-cluster: only the cluster fault tests (tests/cluster; `make test` runs them too)
test-cluster: venv check-services
	$(PY) -m pytest tests/cluster

## make cluster: HAProxy, two app nodes with their workers, a PostgreSQL primary and streaming standby, a Redis
## primary, replica and three Sentinels, on this machine from Debian's packages (docs/SCALING.md); serves on
## http://127.0.0.1:$(CLUSTER_BASE_PORT). make cluster-stop stops everything it started (data stays in $(CLUSTER_DIR)).
CLUSTER_DIR ?= var/cluster
CLUSTER_BASE_PORT ?= 17000
cluster: venv
	$(PY) deploy/cluster/chatcluster.py up --dir $(CLUSTER_DIR) --base-port $(CLUSTER_BASE_PORT)

cluster-stop:
	@if test -x $(PY); then $(PY) deploy/cluster/chatcluster.py down --dir $(CLUSTER_DIR); \
	else echo "no $(PY): make cluster has not run here"; fi

check-services: venv
	@$(PY) scripts/check_services.py

lint: venv
	$(VENV)/bin/hadolint Dockerfile

## --- Benchmarks and load tests (bench/README.md, docs/PERFORMANCE.md) ---------
## They fill and measure the database in DATABASE_URL (default: chat_bench on
## the local PostgreSQL) and Redis in REDIS_URL; traffic stays on 127.0.0.1.
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chat_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/6
BENCH_ENV = DJANGO_SETTINGS_MODULE=chatsite.settings.test DATABASE_URL=$${DATABASE_URL:-$(BENCH_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(BENCH_REDIS_URL)}
LOADTEST_HOST ?= http://127.0.0.1:$(PORT)
LOADTEST_USERS ?= 500
LOADTEST_TIME ?= 2m

bench-database: venv
	@psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'chat_bench'" | grep -q 1 \
		|| psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE chat_bench"
	$(BENCH_ENV) $(PY) manage.py migrate --no-input

## make bench: every ADR-008 target on the production-shaped stack (seeds 1M messages if absent)
bench: bench-database
	$(BENCH_ENV) $(PY) -m bench.adr_bench $(BENCH_ARGS)

## make bench-db: p50/p95/p99 and plans of the hot queries (seeds the 1M-message data set if absent)
bench-db: bench-database
	$(BENCH_ENV) $(PY) -m bench.bench_db --reset-stats

## make bench-search: message search p50/p95 for a common, a medium and a rare word and a filtered phrase, through one
## server process, one request at a time, three runs (the 1M-message data set; docs/PERFORMANCE.md "Search")
bench-search: bench-database
	$(BENCH_ENV) $(PY) -m bench.search $(BENCH_SEARCH_ARGS)

## make perf-report: pg_stat_statements, index usage, cache hit ratio, pool
perf-report: venv
	$(PY) manage.py perf_report

## make bench-http: history API and room page at 50 clients, with and without compression (two server processes;
## the API's closed loops also from wrk, installed here from Debian's packages when missing and run as root),
## then the room list of a user in 500 rooms at 100 requests/s on one process (bench/README.md)
bench-http: bench-database
	@command -v wrk >/dev/null || [ "$$(id -u)" != 0 ] || (apt-get update -qq && apt-get install -y -qq wrk) || true
	$(BENCH_ENV) $(PY) bench/bench_http.py --requests 100000 --duration 20 --rate 300 --page-rate 10 --workers 2 --wrk

## make bench-actions: what each action of the Locust mix costs every tier (server, worker, PostgreSQL, Redis, bytes,
## latency, the load generator), each action alone; the table, var/bench-actions.json, and the docs' table (--markdown)
bench-actions: bench-database
	@mkdir -p var
	$(BENCH_ENV) $(PY) -m bench.actions --json var/bench-actions.json --markdown $(BENCH_ACTIONS_ARGS)

## make bench-ws: WebSocket fan-out as browsers connect (permessage-deflate offered): the bare websockets server (the ceiling),
## the tutorial-style reference consumer and ours at 1 and 2 processes, then a reconnect storm, a big room and a reaction storm (bench/README.md)
## (its own database, chat_ws: its 100-room project and the messages it sends would skew bench-db's data set)
BENCH_WS_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chat_ws
# The issue's storm is 10,000 sockets (make bench-ws BENCH_WS_STORM=10000); 5,000 keeps the target near 15 minutes on 2 cores.
BENCH_WS_STORM ?= 5000
BENCH_WS_BIG_ROOM ?= 5000
# Reactions/s on one message from its room's 20 sockets, for 10 s (coalesced events, convergence, CPU per reaction).
BENCH_WS_REACTION_RATE ?= 200
bench-ws: venv
	@mkdir -p var
	@psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'chat_ws'" | grep -q 1 \
		|| psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE chat_ws"
	DJANGO_SETTINGS_MODULE=chatsite.settings.test DATABASE_URL=$${DATABASE_URL:-$(BENCH_WS_DATABASE_URL)} $(PY) manage.py migrate --no-input
	DJANGO_SETTINGS_MODULE=chatsite.settings.test DATABASE_URL=$${DATABASE_URL:-$(BENCH_WS_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(BENCH_REDIS_URL)} $(PY) -m bench.ws_bench --target both --bare --reference-stack tutorial --ramp --rate 1200 --rooms 100 --clients-per-room 20 --senders 100 \
		--processes 1,2 --duration 4 --storm $(BENCH_WS_STORM) --big-room $(BENCH_WS_BIG_ROOM) --big-room-rate 2 \
		--reactions --reaction-rate $(BENCH_WS_REACTION_RATE) --json var/bench-ws.json
	@# Acknowledged sends: rooms of two, everyone sends (persisted, ordered, idempotent; ack p99 in the table).
	DJANGO_SETTINGS_MODULE=chatsite.settings.test DATABASE_URL=$${DATABASE_URL:-$(BENCH_WS_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(BENCH_REDIS_URL)} $(PY) -m bench.ws_bench --target ours --ramp --ramp-start 400 --rate 4000 --rooms 200 --clients-per-room 2 --senders 400 \
		--processes 1,2 --duration 4 --json var/bench-ws-acks.json

## make loadtest: the Locust chat mix, headless, against a server already running at LOADTEST_HOST
## (same DATABASE_URL as that server; serve it with SILKY_INTERCEPT_PERCENT=0 to measure the app, not the profiler)
loadtest: venv
	@mkdir -p var/loadtest
	$(PY) -m bench.seed --users $(LOADTEST_USERS) --projects 2 --rooms 10 --messages 20000 --no-progress
	$(PY) -m bench.make_tokens --users $(LOADTEST_USERS) --out var/loadtest/tokens.json
	$(VENV)/bin/locust -f loadtest/locustfile.py --headless -H $(LOADTEST_HOST) \
		--tokens-file var/loadtest/tokens.json -u $(LOADTEST_USERS) -r 50 -t $(LOADTEST_TIME) --only-summary $(LOADTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
