"""``manage.py collectstatic_if_missing``: collect the static files when the manifest storage has no manifest yet.

The production storage (whitenoise's CompressedManifestStaticFilesStorage,
perf.static) names every asset from collectstatic's ``staticfiles.json``;
without it every page is a 500 ("Missing staticfiles manifest entry") and
/static/ a 404. scripts/serve.sh runs this before it starts the server. With
a storage that needs no manifest (development) or a manifest already there
(the image collects at build time) it does nothing. It does not notice a
manifest older than the static files: after changing them, run collectstatic.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Run collectstatic --noinput if the static files storage needs a manifest and has none."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._collect_if_missing()
        except OSError as exc:
            raise CommandError(
                f"cannot write the static files to {settings.STATIC_ROOT} ({exc.strerror or exc}): "
                "run `python manage.py collectstatic --noinput` as a user who may write there, or set STATIC_ROOT."
            ) from exc

    def _collect_if_missing(self) -> None:
        # The storage reads its manifest when first touched: an unreadable STATIC_ROOT fails here already.
        if not isinstance(staticfiles_storage, ManifestFilesMixin):
            return
        if staticfiles_storage.manifest_storage.exists(staticfiles_storage.manifest_name):
            return
        self.stdout.write(
            f"{staticfiles_storage.manifest_name} is missing in {settings.STATIC_ROOT}: "
            "collecting the static files (collectstatic --noinput; compressing them takes a minute)."
        )
        call_command("collectstatic", interactive=False, verbosity=0)
        self.stdout.write(f"Static files collected in {settings.STATIC_ROOT}.")
