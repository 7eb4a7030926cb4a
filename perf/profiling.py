"""django-silk's pages, mounted with a Content-Security-Policy they can work under.

Silk's templates use inline scripts, inline event handlers and inline styles,
which the site's policy (script-src/style-src 'self') blocks. Its pages are
for staff only (SILKY_AUTHENTICATION/AUTHORISATION), so only they get
'unsafe-inline' added; every other page keeps the strict policy.
"""

from __future__ import annotations

from typing import Any

from csp.decorators import csp_update
from django.urls import URLPattern, URLResolver

SILK_CSP = {"script-src": ["'unsafe-inline'"], "style-src": ["'unsafe-inline'"]}


def _relaxed(patterns: list[Any]) -> list[Any]:
    wrapped: list[Any] = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            wrapped.append(URLResolver(entry.pattern, _relaxed(entry.url_patterns), entry.default_kwargs, entry.app_name, entry.namespace))
        elif isinstance(entry, URLPattern):
            wrapped.append(URLPattern(entry.pattern, csp_update(SILK_CSP)(entry.callback), entry.default_args, entry.name))
        else:
            wrapped.append(entry)
    return wrapped


def silk_urls() -> tuple[list[Any], str]:
    """``include()`` argument for silk's URLs (app ``silk``) with the relaxed policy."""
    from silk import urls

    return _relaxed(urls.urlpatterns), "silk"
