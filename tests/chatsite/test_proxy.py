"""Forwarded headers are believed only from TRUSTED_PROXIES (chatsite.asgi), under the real server process.

The server's own proxy-header handling is off (chatsite.server), so a client
on 127.0.0.1 (uvicorn's old default trust) cannot pick its address or scheme.
"""

from __future__ import annotations

import http.client
import secrets
from typing import Any

import pytest
import redis

from chatsite import env
from tests.servers import app_servers

SPOOFED = "203.0.113.77"


def request(port: int, method: str, path: str, *, headers: dict[str, str], body: bytes | None = None) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Host": "127.0.0.1", **headers})
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def failed_login(port: int, **headers: str) -> None:
    response = request(
        port,
        "POST",
        "/api/v1/auth/token",
        headers={"Content-Type": "application/json", **headers},
        body=b'{"username": "nobody", "password": "wrong"}',
    )
    assert response.status == 401


def login_ip_keys() -> list[str]:
    """The addresses the server's ``login_ip`` counters are keyed on."""
    client = redis.Redis.from_url(env.REDIS_URL)
    try:
        keys = [key.decode() for key in client.scan_iter(match="*:ratelimit:login_ip:*")]
    finally:
        client.close()
    # <prefix>:<version>:ratelimit:login_ip:<address>:<window>
    return sorted({key.split(":ratelimit:login_ip:", 1)[1].rsplit(":", 1)[0] for key in keys})


@pytest.mark.django_db(transaction=True)
def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    with app_servers(1) as [(port, _)]:
        failed_login(port, **{"X-Forwarded-For": SPOOFED})
        failed_login(port, **{"X-Forwarded-For": "198.51.100.1, " + SPOOFED})
    assert login_ip_keys() == ["127.0.0.1"]


@pytest.mark.django_db(transaction=True)
def test_forwarded_for_from_a_trusted_proxy_is_the_client_address() -> None:
    with app_servers(1, TRUSTED_PROXIES="10.0.0.0/8,127.0.0.1") as [(port, _)]:
        failed_login(port, **{"X-Forwarded-For": SPOOFED})
        # The nearest address not itself a trusted proxy is the client.
        failed_login(port, **{"X-Forwarded-For": "198.51.100.1, 10.1.2.3"})
        failed_login(port)
    assert login_ip_keys() == ["127.0.0.1", "198.51.100.1", SPOOFED]


def production_server(**extra: str) -> Any:
    return app_servers(
        1,
        DJANGO_SETTINGS_MODULE="chatsite.settings.production",
        SECRET_KEY=secrets.token_urlsafe(50),
        SECURE_SSL_REDIRECT="true",
        **extra,
    )


@pytest.mark.django_db(transaction=True)
def test_production_ignores_forwarded_proto_from_an_untrusted_peer() -> None:
    with production_server() as [(port, _)]:
        spoofed = request(port, "GET", "/api/v1/me", headers={"X-Forwarded-Proto": "https"})
        # Not believed: plain HTTP, so the redirect to HTTPS and no HSTS.
        assert spoofed.status == 301 and spoofed.getheader("Location") == "https://127.0.0.1/api/v1/me"
        assert spoofed.getheader("Strict-Transport-Security") is None
        # The container health check asks over plain HTTP and is answered.
        health = request(port, "GET", "/healthz", headers={})
        assert health.status == 200 and health.getheader("Strict-Transport-Security") is None


@pytest.mark.django_db(transaction=True)
def test_production_behind_a_trusted_tls_proxy_is_secure() -> None:
    with production_server(TRUSTED_PROXIES="127.0.0.1") as [(port, _)]:
        secure = request(port, "GET", "/api/v1/me", headers={"X-Forwarded-Proto": "https"})
        # request.is_secure() follows the scope's scheme: no redirect, and HSTS.
        assert secure.status == 401
        assert secure.getheader("Strict-Transport-Security") == "max-age=31536000; includeSubDomains; preload"
        # Without the header the proxy is saying the client came over plain HTTP.
        plain = request(port, "GET", "/api/v1/me", headers={})
        assert plain.status == 301 and plain.getheader("Location") == "https://127.0.0.1/api/v1/me"
