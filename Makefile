# The two front-door commands: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# `make run` records and profiles every request with django-silk (/silk/, staff only).
SILKY_INTERCEPT_PERCENT ?= 100
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test venv migrate seed lint check-services clean

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

## make test: the whole suite against the real PostgreSQL and Redis
test: venv check-services
	$(PY) -m pytest

check-services: venv
	@$(PY) scripts/check_services.py

lint: venv
	$(VENV)/bin/hadolint Dockerfile

clean:
	rm -rf $(VENV) var .pytest_cache
