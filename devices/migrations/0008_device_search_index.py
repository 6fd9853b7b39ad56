"""The device search's indexes on SQLite (devices/search.py says how they are used).

* ``devices_device_name_fts``: an FTS5 table with the trigram tokenizer (case-insensitive) over
  ``devices_device.name`` (external content: it stores the index, not a copy of the names), kept
  in step by three triggers; the rows already there are indexed here (``rebuild``).
* ``device_device_id_nocase_idx``: deviceId under NOCASE, the collation SQLite's LIKE uses for a
  prefix (``device_id__startswith``), so that a prefix search reads a range instead of the table.

Only on SQLite with FTS5 and the trigram tokenizer (SQLite ≥ 3.34); elsewhere nothing is done
and the search stays the plain filter (on PostgreSQL: ``UPPER(name) LIKE UPPER(...)``).

Beware: on SQLite Django rebuilds a table for many schema changes (new table, copy, drop,
rename), and dropping ``devices_device`` drops these triggers. A later migration that alters
``Device`` must create them again (``install`` below); the search then uses the plain filter
until it does (devices/search.py checks that they exist), and tests/test_device_search.py fails.
"""

import sqlite3

from django.db import OperationalError, migrations

FTS = "devices_device_name_fts"

CREATE = [
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS} USING fts5("
    "name, content='devices_device', content_rowid='id', tokenize='trigram case_sensitive 0')",
    f"""CREATE TRIGGER IF NOT EXISTS {FTS}_insert AFTER INSERT ON devices_device BEGIN
        INSERT INTO {FTS} (rowid, name) VALUES (new.id, new.name);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS {FTS}_delete AFTER DELETE ON devices_device BEGIN
        INSERT INTO {FTS} ({FTS}, rowid, name) VALUES ('delete', old.id, old.name);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS {FTS}_update AFTER UPDATE OF id, name ON devices_device
    WHEN old.id IS NOT new.id OR old.name IS NOT new.name BEGIN
        INSERT INTO {FTS} ({FTS}, rowid, name) VALUES ('delete', old.id, old.name);
        INSERT INTO {FTS} (rowid, name) VALUES (new.id, new.name);
    END""",
    # Every row already in the table, from the content table.
    f"INSERT INTO {FTS} ({FTS}) VALUES ('rebuild')",
    "CREATE INDEX IF NOT EXISTS device_device_id_nocase_idx "
    "ON devices_device (device_id COLLATE NOCASE)",
]

DROP = [
    "DROP INDEX IF EXISTS device_device_id_nocase_idx",
    f"DROP TRIGGER IF EXISTS {FTS}_update",
    f"DROP TRIGGER IF EXISTS {FTS}_delete",
    f"DROP TRIGGER IF EXISTS {FTS}_insert",
    f"DROP TABLE IF EXISTS {FTS}",
]


def _trigram_available(connection):
    """FTS5 with the trigram tokenizer (SQLite 3.34, December 2020), tried on a temporary table."""
    if sqlite3.sqlite_version_info < (3, 34):
        return False
    with connection.cursor() as cursor:
        try:
            cursor.execute("CREATE VIRTUAL TABLE temp.trigram_probe USING fts5(x, tokenize='trigram')")
        except OperationalError:
            return False
        cursor.execute("DROP TABLE temp.trigram_probe")
    return True


def install(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "sqlite" or not _trigram_available(connection):
        return
    for statement in CREATE:
        schema_editor.execute(statement)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    for statement in DROP:
        schema_editor.execute(statement)


class Migration(migrations.Migration):

    dependencies = [
        ("devices", "0007_message_trace"),
    ]

    operations = [
        migrations.RunPython(install, uninstall, elidable=False),
    ]
