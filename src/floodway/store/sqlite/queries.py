"""The SQLite store's queries that more than one of its roles runs, by name (the queries both
backends share are in ``store.sql``, written in this dialect)."""

from __future__ import annotations

from ..sql import JOB_COLUMNS, SPEC_SQL, TENANT_QUERIES

_JOB_COLUMNS = JOB_COLUMNS

#: every limit's declaration
_SPEC_SQL = SPEC_SQL

__all__ = ["TENANT_QUERIES", "_JOB_COLUMNS", "_SPEC_SQL"]
