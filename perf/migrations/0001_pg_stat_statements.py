"""Create the pg_stat_statements extension where the server can use it.

The extension only collects when the server preloads its library
(shared_preload_libraries, which needs a restart), and creating it needs
privileges a deployment's role may lack. In both cases this migration logs a
warning and does nothing, so migrations never fail because of it; the
performance report then says why statement statistics are missing. On other
databases it does nothing.
"""

import logging

from django.db import DatabaseError, migrations, transaction

logger = logging.getLogger("perf.migrations")


def preload_includes(value: str, library: str = "pg_stat_statements") -> bool:
    """Whether ``library`` is in a shared_preload_libraries value such as "'a', b"."""
    return library in (part.strip().strip("'\"") for part in value.split(","))


def create_extension(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SHOW shared_preload_libraries")
        preload = cursor.fetchone()[0]
    if not preload_includes(preload):
        logger.warning(
            "pg_stat_statements is not in shared_preload_libraries; statement statistics are off. "
            "Add it to postgresql.conf, restart PostgreSQL and run migrate again."
        )
        return
    try:
        with transaction.atomic(using=connection.alias):
            with connection.cursor() as cursor:
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except DatabaseError as exc:
        logger.warning("pg_stat_statements could not be created (%s); statement statistics are off.", exc)


class Migration(migrations.Migration):
    dependencies: list = []

    operations = [
        # Reversing keeps the extension: other tools on the server may read it.
        migrations.RunPython(create_extension, migrations.RunPython.noop, elidable=False),
    ]
