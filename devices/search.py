"""Device search: a deviceId prefix or a part of the name, as the console's lists offer it.

What matches is always the plain filter's answer, ``device_id__startswith=q`` or
``name__icontains=q``: on SQLite both are LIKE, case-insensitive for ASCII letters only, every
character of ``q`` literal (``%``, ``_``, quotes, ``*``, ``AND``…). That filter can use no index
(a substring; a case-insensitive prefix over a case-sensitive column), so SQLite reads the table:
about 0.3 s over 1,000,000 devices when few rows match.

On SQLite, migration 0008 adds what finds the candidates instead: an FTS5 table with the trigram
tokenizer over the name (kept in step by triggers) and an index on deviceId under NOCASE. The
candidates are the rows whose name holds ``q`` as an FTS5 phrase (the query is quoted, never read
as FTS5 syntax; the tokenizer folds case beyond ASCII, so they are a superset) and the rows whose
deviceId starts with ``q``; the plain filter is applied to them again, so the rows, their order
and the pages are exactly the plain filter's.

The plain filter alone serves:
- queries under 3 characters (a trigram index holds nothing shorter): the list walks its order
  and stops after a page, which is quick when many rows match and a scan of the table when few do;
- more than ``CANDIDATE_LIMIT`` candidates: the same walk meets rows that common soon when they
  are spread through the list's order, sooner than all of them would be sorted (at worst, when
  they all sit at the end of that order or the other filters exclude them, it reads the table);
- other databases (PostgreSQL: ``UPPER(name) LIKE UPPER(...)``, no trigram index), and SQLite
  without the index or its triggers (see the migration on rebuilt tables): correct, slower.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, connections
from django.db.models import Q
from django.db.models.expressions import RawSQL

logger = logging.getLogger(__name__)

FTS_TABLE = "devices_device_name_fts"
TRIGGERS = (f"{FTS_TABLE}_insert", f"{FTS_TABLE}_delete", f"{FTS_TABLE}_update")
NOCASE_INDEX = "device_device_id_nocase_idx"
TRIGRAM = 3
# Sorting candidates into the list's order costs about 1.5 µs each on SQLite (11,000: 15 ms;
# 111,000: 190 ms, measured over 1,000,000 devices). Past the limit the list's own order is walked:
# with 20,000 of 1,000,000 rows matching, a page is met after about 2,500 rows on average.
CANDIDATE_LIMIT = 20_000


def plain_filter(query: str) -> Q:
    """What a search means: deviceId starts with ``query``, or the name contains it."""
    return Q(device_id__startswith=query) | Q(name__icontains=query)


def fts_phrase(query: str) -> str:
    """``query`` as one FTS5 string (a phrase): inside double quotes, with ``"`` doubled, every
    character is text for the tokenizer, nothing is an operator."""
    return '"' + query.replace('"', '""') + '"'


def search_devices(queryset, query: str):
    """``queryset`` narrowed to the devices ``query`` finds (see the module's docstring)."""
    if not query:
        return queryset
    candidates = _candidates(queryset.db, query)
    if candidates is None:
        return queryset.filter(plain_filter(query))
    return queryset.filter(Q(pk__in=candidates) & plain_filter(query))


def index_ready(connection) -> bool:
    """The trigram table, its three triggers and the NOCASE index exist (SQLite only)."""
    if connection.vendor != "sqlite":
        return False
    names = (FTS_TABLE, NOCASE_INDEX, *TRIGGERS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM sqlite_master WHERE name IN ({', '.join(['%s'] * len(names))})",
            names,
        )
        return cursor.fetchone()[0] == len(names)


def _candidates(alias, query):
    """A subquery of the candidate ids, or None when the plain filter is the better way."""
    connection = connections[alias]
    if len(query) < TRIGRAM or "\x00" in query or not index_ready(connection):
        return None
    phrase = fts_phrase(query)
    prefix = connection.ops.prep_for_like_query(query) + "%"
    names_sql = f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s"
    # The deviceId range comes from the NOCASE index: the LIKE is the one Django writes for
    # device_id__startswith, case-insensitive for ASCII as NOCASE is.
    prefix_sql = "SELECT id FROM devices_device WHERE device_id LIKE %s ESCAPE '\\'"
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT (SELECT count(*) FROM ({names_sql} LIMIT %s)),"
                f" (SELECT count(*) FROM ({prefix_sql} LIMIT %s))",
                [phrase, CANDIDATE_LIMIT + 1, prefix, CANDIDATE_LIMIT + 1],
            )
            by_name, by_prefix = cursor.fetchone()
    except DatabaseError:  # a damaged index: the plain filter still answers right
        logger.exception("The device search index failed; searching without it")
        return None
    if by_name + by_prefix > CANDIDATE_LIMIT:
        return None
    return RawSQL(f"{names_sql} UNION ALL {prefix_sql}", [phrase, prefix])
