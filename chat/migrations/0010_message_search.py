"""The text search index of message bodies (chat.search_index), for the SEARCH_CONFIG in force."""

from django.db import migrations


def create_index(apps, schema_editor):
    from chat.search_index import search_index_ensure

    search_index_ensure(connection=schema_editor.connection)


def drop_index(apps, schema_editor):
    from chat.search_index import INDEX_NAME

    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX_NAME}")


class Migration(migrations.Migration):
    dependencies = [("chat", "0009_notifications")]

    operations = [migrations.RunPython(create_index, drop_index, elidable=False)]
