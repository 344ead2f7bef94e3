"""The native bulk upsert of each database, for the record consumer's rows and for the rows of
the tables its payloads carry as associations.

PostgreSQL and SQLite: ``INSERT .. ON CONFLICT (key columns) DO UPDATE``; MySQL/MariaDB:
``INSERT .. ON DUPLICATE KEY UPDATE``. A statement names the columns it writes, so rows of
different columns go in separate statements (a payload that leaves a column out leaves the
row's value alone instead of writing NULL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa


def upsert_statement(table: sa.Table, key_cols: Sequence[str], dialect: str,
                     cols: frozenset[str]) -> Any:
    """The dialect's upsert of rows with columns ``cols``: on a conflict of ``key_cols``
    every written column but the key and ``created_at`` is updated. With no key columns
    among ``cols`` (an association row whose generated id is not known yet) a plain insert."""
    if not set(key_cols) <= cols:
        return table.insert()
    update = [c for c in table.c if c.name in cols and c.name not in key_cols
              and c.name != "created_at"]
    stmt: Any
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        stmt = mysql_insert(table)
        set_ = {c.name: stmt.inserted[c.name] for c in update} or {
            key_cols[0]: stmt.inserted[key_cols[0]]}
        return stmt.on_duplicate_key_update(set_)
    from sqlalchemy.dialects import postgresql, sqlite

    dialect_insert: Any
    if dialect == "postgresql":
        dialect_insert = postgresql.insert
    elif dialect == "sqlite":
        dialect_insert = sqlite.insert
    else:
        raise NotImplementedError(f"record consumers support PostgreSQL, SQLite, MySQL and "
                                  f"MariaDB, not {dialect}")
    stmt = dialect_insert(table)
    target = [table.c[k] for k in key_cols]
    if update:
        return stmt.on_conflict_do_update(
            index_elements=target, set_={c.name: stmt.excluded[c.name] for c in update})
    return stmt.on_conflict_do_nothing(index_elements=target)


class Statements:
    """:func:`upsert_statement` of one table and key, built once per (dialect, columns)."""

    def __init__(self, table: sa.Table, key_cols: Sequence[str]) -> None:
        self.table = table
        self.key_cols = list(key_cols)
        self._built: dict[tuple[str, frozenset[str]], Any] = {}

    def __call__(self, dialect: str, cols: frozenset[str]) -> Any:
        stmt = self._built.get((dialect, cols))
        if stmt is None:
            stmt = self._built[(dialect, cols)] = upsert_statement(
                self.table, self.key_cols, dialect, cols)
        return stmt


def execute_upserts(conn: sa.Connection, rows: list[dict[str, Any]],
                    statement: Callable[[str, frozenset[str]], Any],
                    step: int | None = None) -> None:
    """Write ``rows`` with ``statement(dialect, columns)``, one statement per set of columns,
    in chunks of ``step`` rows."""
    if not rows:
        return
    first = rows[0].keys()
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    if all(r.keys() == first for r in rows):
        groups[frozenset(first)] = rows
    else:
        for row in rows:
            groups.setdefault(frozenset(row), []).append(row)
    size = step or 1_000_000
    dialect = conn.dialect.name
    for cols, group in groups.items():
        stmt = statement(dialect, cols)
        for start in range(0, len(group), size):
            conn.execute(stmt, group[start:start + size])
