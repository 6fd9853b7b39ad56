"""The queries on the paths that brokers and scripts call thousands of times a second, as SQL
written once (issue 11).

Building a queryset and compiling it costs the ORM 200–500 µs a query; SQLite answers the same
indexed query in 15–30 µs (``bench/`` and the README's "Benchmarks"). On ``/mqtt/auth``,
mqtt-params and the embedded broker's cold look-ups that compile step was most of the request.
So each query here is plain SQL with placeholders, built from the models' ``_meta`` (table and
column names are never spelt out by hand), and its rows go through the same converters the
ORM applies (decryption of the secret fields, datetimes, booleans), on every database Django
supports. Each function names the queryset it stands for, and ``tests/test_hot_queries.py``
compares the two on the same rows.

Nothing here decides anything: the callers keep their rules (the verifier, the throttle, the
session records); this module only fetches and stores faster.
"""

from __future__ import annotations

import asyncio
import functools
import os
from datetime import datetime

from django.core.exceptions import SynchronousOnlyOperation
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone


def _connection():
    return connections[DEFAULT_DB_ALIAS]


def _quoted(connection, model, field_name=None):
    if field_name is None:
        return connection.ops.quote_name(model._meta.db_table)
    return connection.ops.quote_name(model._meta.get_field(field_name).column)


def _datetime_param(connection, value):
    return connection.ops.adapt_datetimefield_value(value)


@functools.cache
def _qmark(sql):
    """The SQL with SQLite's own placeholders (what ``SQLiteCursorWrapper.convert_query`` makes
    of it on every call; the SQL here never holds a literal ``%``)."""
    return sql.replace("%s", "?")


def _fast_path(connection):
    return (connection.vendor == "sqlite" and not connection.queries_logged
            and not connection.execute_wrappers)


def _raw_connection(connection):
    """The sqlite3 connection, after the checks ``connection.cursor()`` makes: not in an event
    loop (Django's ``async_unsafe``), not another thread's, not in a broken transaction."""
    if asyncio._get_running_loop() is not None and not os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"):
        raise SynchronousOnlyOperation(
            "You cannot call this from an async context - use a thread or sync_to_async."
        )
    if connection.connection is None:
        connection.ensure_connection()
    connection.validate_thread_sharing()
    connection.validate_no_broken_transaction()
    return connection.connection


def _query(connection, sql, params, fetch):
    """``fetch(cursor)`` once ``sql`` (``%s`` placeholders) has run with ``params``.

    On SQLite the statement goes straight to the connection's sqlite3 object: Django's cursor
    wrappers (a cursor made and closed per query, the placeholder rewrite, the error wrappers'
    frames) cost 35–40 µs a query here, where SQLite answers an indexed look-up in 3–10 µs. The
    same connection, so the same transaction; errors, the fetch's too, still come as Django's
    (``OperationalError`` for a locked database: ``portal.middleware``). When queries are being
    logged (DEBUG, ``CaptureQueriesContext``) or wrapped (``connection.execute_wrapper``), the
    query takes Django's path so that they see it."""
    if _fast_path(connection):
        raw = _raw_connection(connection)
        with connection.wrap_database_errors:
            cursor = raw.execute(_qmark(sql), params)
            try:
                return fetch(cursor)
            finally:
                cursor.close()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return fetch(cursor)


def _fetchall(connection, sql, params):
    return _query(connection, sql, params, lambda cursor: cursor.fetchall())


def _fetchone(connection, sql, params):
    return _query(connection, sql, params, lambda cursor: cursor.fetchone())


def _execute(connection, sql, params):
    _query(connection, sql, params, lambda cursor: None)


class _Loader:
    """Rows of ``model`` (every concrete field, in ``_meta`` order) → instances, with the ORM's
    own converters (what ``SQLCompiler.get_converters`` applies to a select of those columns),
    made for one connection (:func:`_loader`: each thread has its own)."""

    def __init__(self, model, connection):
        self.model = model
        self.connection = connection
        self.attnames = [field.attname for field in model._meta.concrete_fields]
        self.converters = {}
        for field in model._meta.concrete_fields:
            column = field.get_col(model._meta.db_table)
            found = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
            self.converters[field.attname] = (column, found)
        # Only the fields that have converters are visited per row (most have none).
        self.converted = [(index, name) for index, name in enumerate(self.attnames)
                          if self.converters[name][1]]

    def columns(self, alias):
        return ", ".join(
            f"{alias}.{self.connection.ops.quote_name(field.column)}"
            for field in self.model._meta.concrete_fields
        )

    def convert(self, attname, value):
        column, found = self.converters[attname]
        for converter in found:
            value = converter(value, column, self.connection)
        return value

    def instance(self, values):
        if len(values) != len(self.attnames):
            raise ValueError(f"{len(values)} values for {len(self.attnames)} fields")
        converted = list(values)
        for index, name in self.converted:
            converted[index] = self.convert(name, converted[index])
        return self.model.from_db(self.connection.alias, self.attnames, converted)


def _loader(model, connection):
    """The model's loader for this connection, made once (kept on the connection object)."""
    loaders = connection.__dict__.setdefault("_hot_query_loaders", {})
    loader = loaders.get(model)
    if loader is None:
        loader = loaders[model] = _Loader(model, connection)
    return loader


# --- the registry --------------------------------------------------------------------------


@functools.cache
def _device_records_sql(vendor, count):
    from .models import Device, Product

    c = _connection()
    pair = (f"(p.{_quoted(c, Product, 'product_id')} = %s "
            f"AND d.{_quoted(c, Device, 'device_id')} = %s)")
    return (
        f"SELECT d.{_quoted(c, Device, 'id')}, p.{_quoted(c, Product, 'product_id')}, "
        f"d.{_quoted(c, Device, 'device_id')}, d.{_quoted(c, Device, 'device_secret')}, "
        f"d.{_quoted(c, Device, 'enabled')}, d.{_quoted(c, Device, 'secret_rotated_at')} "
        f"FROM {_quoted(c, Device)} d INNER JOIN {_quoted(c, Product)} p "
        f"ON p.{_quoted(c, Product, 'id')} = d.{_quoted(c, Device, 'product')} "
        f"WHERE {' OR '.join([pair] * count)}"
    )


DEVICE_RECORDS_CHUNK = 100  # (productId, deviceId) pairs per query: 200 parameters


def device_records(keys):
    """``{(productId, deviceId): (pk, secret, enabled, secret_rotated_at)}`` for those of
    ``keys`` that exist, one query per ``DEVICE_RECORDS_CHUNK`` keys (the embedded broker's
    batch of cold look-ups, ``broker/loader.py``). Stands for ``Device.objects.filter(Q(
    product__product_id=…, device_id=…) | …).values_list(…)``."""
    from .models import Device

    connection = _connection()
    loader = _loader(Device, connection)
    keys = sorted(set(keys))
    found = {}
    for start in range(0, len(keys), DEVICE_RECORDS_CHUNK):
        chunk = keys[start : start + DEVICE_RECORDS_CHUNK]
        params = [part for key in chunk for part in key]
        rows = _fetchall(connection, _device_records_sql(connection.vendor, len(chunk)), params)
        for pk, product_id, device_id, secret, enabled, rotated in rows:
            found[(product_id, device_id)] = (
                pk,
                loader.convert("device_secret", secret),
                loader.convert("enabled", enabled),
                loader.convert("secret_rotated_at", rotated),
            )
    return found


def device_record(product_id: str, device_id: str):
    """``(pk, secret, enabled, secret_rotated_at)`` of the device, the secret decrypted, or None.

    Stands for ``Device.objects.filter(product__product_id=…, device_id=…).only("pk",
    "device_secret", "enabled", "secret_rotated_at").first()`` (the (product, deviceId) pair is
    unique, so there is at most one row)."""
    return device_records([(product_id, device_id)]).get((product_id, device_id))


@functools.cache
def _device_with_product_sql(vendor):
    from .models import Device, Product

    c = _connection()
    return (
        f"SELECT {_loader(Device, c).columns('d')}, {_loader(Product, c).columns('p')} "
        f"FROM {_quoted(c, Device)} d INNER JOIN {_quoted(c, Product)} p "
        f"ON p.{_quoted(c, Product, 'id')} = d.{_quoted(c, Device, 'product')} "
        f"WHERE p.{_quoted(c, Product, 'product_id')} = %s "
        f"AND d.{_quoted(c, Device, 'device_id')} = %s"
    )


def device_with_product(product_id: str, device_id: str):
    """The device with its product loaded, or raises ``Device.DoesNotExist``.

    Stands for ``Device.objects.select_related("product").get(product__product_id=…,
    device_id=…)`` (``DeviceQuerySet.lookup``): every field of both, converted as the ORM does."""
    from .models import Device, Product

    connection = _connection()
    row = _fetchone(connection, _device_with_product_sql(connection.vendor),
                    [product_id, device_id])
    if row is None:
        raise Device.DoesNotExist(f"No device {device_id!r} in product {product_id!r}.")
    devices, products = _loader(Device, connection), _loader(Product, connection)
    split = len(devices.attnames)
    device = devices.instance(row[:split])
    product = products.instance(row[split:])
    Device._meta.get_field("product").set_cached_value(device, product)
    return device


# --- failed logins and tokens (django-axes' table) -----------------------------------------


@functools.cache
def _failures_sql(vendor):
    from axes.models import AccessAttempt

    c = _connection()
    return (
        f"SELECT 1 FROM {_quoted(c, AccessAttempt)} "
        f"WHERE {_quoted(c, AccessAttempt, 'ip_address')} = %s "
        f"AND {_quoted(c, AccessAttempt, 'attempt_time')} >= %s LIMIT 1"
    )


def has_failures_since(ip_address: str | None, since: datetime) -> bool:
    """Whether axes holds a failure of this address at or after ``since``.

    Stands for ``AccessAttempt.objects.filter(ip_address=…, attempt_time__gte=…).exists()``. The
    address is bound as the field stores it (``GenericIPAddressField`` writes IPv6 in one form:
    ``2001:DB8:0::1`` and Python's ``::ffff:cb00:7105`` are stored as ``2001:db8::1`` and
    ``::ffff:203.0.113.5``), so that no spelling of an address escapes its failures. None (no
    address) matches the rows without one, as the ORM's ``isnull`` does."""
    from axes.models import AccessAttempt

    if ip_address is None:
        return AccessAttempt.objects.filter(
            ip_address__isnull=True, attempt_time__gte=since
        ).exists()
    stored = AccessAttempt._meta.get_field("ip_address").get_prep_value(ip_address)
    connection = _connection()
    return _fetchone(connection, _failures_sql(connection.vendor),
                     [stored, _datetime_param(connection, since)]) is not None


# --- the EMQX session records --------------------------------------------------------------


@functools.cache
def _connected_sessions_sql(vendor, since_rotation):
    from .models import BrokerSession

    c = _connection()

    def col(name):
        return _quoted(c, BrokerSession, name)

    sql = (
        f"SELECT {col('id')}, {col('client_id')}, {col('broker_client_id')}, {col('username')}, "
        f"{col('exclusive')} FROM {_quoted(c, BrokerSession)} "
        f"WHERE {col('username')} = %s AND {col('connected_at')} IS NOT NULL"
    )
    if since_rotation:
        sql += f" AND {col('authenticated_at')} >= %s"
    return sql + f" ORDER BY {col('exclusive')} DESC, {col('connected_at')} DESC, {col('id')} DESC"


def connected_sessions(username: str, authenticated_since: datetime | None = None):
    """``(pk, client_id, broker_client_id, username, exclusive)`` of the connected sessions of
    ``username``, the exclusive ones first, then the newest.

    Stands for ``BrokerSession.objects.connected().filter(username=…[,
    authenticated_at__gte=…]).order_by("-exclusive", "-connected_at", "-pk")``."""
    connection = _connection()
    params = [username]
    if authenticated_since is not None:
        params.append(_datetime_param(connection, authenticated_since))
    rows = _fetchall(
        connection, _connected_sessions_sql(connection.vendor, authenticated_since is not None),
        params,
    )
    return [(pk, client_id, broker_id, name, bool(exclusive))
            for pk, client_id, broker_id, name, exclusive in rows]


@functools.cache
def _insert_session_sql(vendor):
    from .models import BrokerSession

    c = _connection()
    names = ["device", "username", "client_id", "broker_client_id", "peerhost", "peername",
             "exclusive", "authenticated_at"]
    columns = ", ".join(_quoted(c, BrokerSession, name) for name in names)
    return (f"INSERT INTO {_quoted(c, BrokerSession)} ({columns}) "
            f"VALUES ({', '.join(['%s'] * len(names))})")


def insert_pending_session(device_pk, username, client_id, broker_client_id, peerhost, exclusive,
                           authenticated_at=None):
    """Records an accepted CONNECT (no ``connected_at`` yet). Stands for
    ``BrokerSession.objects.create(…)`` with those fields and an empty ``peername``; the caller
    has made the texts fit their columns."""
    connection = _connection()
    when = authenticated_at or timezone.now()
    _execute(connection, _insert_session_sql(connection.vendor), [
        device_pk, username, client_id, broker_client_id, peerhost, "", bool(exclusive),
        _datetime_param(connection, when),
    ])


# --- fleet checks ---------------------------------------------------------------------------


@functools.cache
def _insert_sql(model, vendor):
    c = _connection()
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    columns = ", ".join(c.ops.quote_name(field.column) for field in fields)
    sql = (f"INSERT INTO {_quoted(c, model)} ({columns}) "
           f"VALUES ({', '.join(['%s'] * len(fields))})")
    return fields, sql


def insert_copies(template, attname: str, values) -> list[int]:
    """Insert one row per value of ``values``: the unsaved instance ``template`` with ``attname``
    set to that value. Returns their primary keys, in the order of ``values``; all or none of the
    rows are written.

    Stands for ``bulk_create([copy of template with attname=value, …])``, whose compile step
    prepares every field of every row (0.1-0.2 ms a row: 14 s for a fleet of 100,000 checks).
    Here the template's values are prepared once, each by its field as ``bulk_create`` prepares
    it (``pre_save``, then ``get_db_prep_save``), and ``attname``'s for every row. On SQLite the
    rows go one statement each through the connection's own sqlite3 object (its ``lastrowid`` is
    the row's key: an auto-incremented one); elsewhere, or with queries logged or wrapped,
    ``bulk_create`` runs."""
    from django.db import transaction

    model = type(template)
    connection = _connection()
    values = list(values)
    if not values:
        return []
    from django.db.models.fields import AutoFieldMixin

    if not _fast_path(connection) or not isinstance(model._meta.pk, AutoFieldMixin):
        names = [f.attname for f in model._meta.concrete_fields if not f.primary_key]
        shared = {name: getattr(template, name) for name in names}
        copies = [model(**{**shared, attname: value}) for value in values]
        return [obj.pk for obj in model.objects.bulk_create(copies, batch_size=500)]
    fields, sql = _insert_sql(model, connection.vendor)
    position = next(i for i, f in enumerate(fields) if f.attname == attname)
    varying = fields[position]
    row = [field.get_db_prep_save(field.pre_save(template, add=True), connection)
           for field in fields]
    pks = []
    with transaction.atomic(using=connection.alias, savepoint=False):
        cursor = _raw_connection(connection).cursor()
        statement = _qmark(sql)
        try:
            with connection.wrap_database_errors:
                for value in values:
                    row[position] = varying.get_db_prep_save(value, connection)
                    cursor.execute(statement, row)
                    pks.append(cursor.lastrowid)
        finally:
            cursor.close()
    return pks
