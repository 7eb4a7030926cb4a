"""What pages are built from besides their data: ``release_fingerprint()``, for page ETags (chat.views).

Static files themselves are served by whitenoise in production
(chatsite/settings/production.py) and by Django's own handler under DEBUG
(chatsite.asgi).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.storage import staticfiles_storage


@lru_cache(maxsize=1)
def release_fingerprint() -> str:
    """A digest of the templates and the static files' hashed names, computed once per process.

    Page ETags include it, so after a deploy that changes either a browser
    never keeps an old page (or one pointing at assets that are gone) on a 304.
    """
    digest = hashlib.blake2b(digest_size=8)
    templates = Path(settings.BASE_DIR, "templates")
    for path in sorted(templates.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(templates)).encode())
            digest.update(path.read_bytes())
    hashed_files = getattr(staticfiles_storage, "hashed_files", None) or {}
    digest.update(repr(sorted(hashed_files.items())).encode())
    return digest.hexdigest()
