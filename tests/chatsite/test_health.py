from __future__ import annotations

import pytest

from chatsite import env, health


@pytest.mark.django_db
def test_healthz_ok_with_database_and_redis(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


@pytest.mark.django_db
def test_healthz_503_names_redis_when_it_is_down(client, monkeypatch):
    # Not a mock: the check really connects, to a port where nothing listens.
    monkeypatch.setattr(env, "REDIS_URL", "redis://127.0.0.1:1/0")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "ok", "redis": "error"}


def test_redis_check_reports_error_for_a_dead_server(monkeypatch):
    monkeypatch.setattr(env, "REDIS_URL", "redis://127.0.0.1:1/0")
    assert health._redis() == "error"


def test_redis_check_disabled_without_redis_url(monkeypatch):
    monkeypatch.setattr(env, "REDIS_URL", "")
    assert health._redis() == "disabled"


@pytest.mark.django_db
def test_healthz_refuses_post(client):
    assert client.post("/healthz").status_code == 405
