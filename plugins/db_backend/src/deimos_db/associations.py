"""Multi-table record consumers: a payload that carries, beside the parent's columns, the rows
of a relationship of the model (Ruby Deimos's associations with ``bulk_import_id_column``,
``replace_associations`` and ``bulk_import_id_generator``).

A payload key named like a relationship of the consumer's model holds that relationship's
rows: a dict (``uselist=False``) or a list of dicts. In the batch's transaction:

* **many-to-one** (the parent holds the foreign key, e.g. ``widgets.brand_id``): the related
  rows are upserted *first* and the parent rows get their keys (Ruby's
  ``save_associations_first``, which deimos reads from the relationship's direction). A
  related row without its primary key is stamped with a fresh ``bulk_import_id_column``
  value, by which the id the database gave it is read back.
* **one-to-many** (the child holds the foreign key, e.g. ``details.widget_id``): after the
  parents are upserted, each child row gets its parent's key (read back by the consumer's key
  columns when the payload does not carry it). With ``replace_associations`` (the default)
  the children of a parent whose payload carries the relationship become exactly the ones
  given: on a child table with the ``bulk_import_id_column``, the rows are upserted stamped
  with this batch's import id and the parent's other children deleted (so a child given with
  its primary key keeps its row); without that column the parent's children are deleted and
  the given ones inserted. Otherwise (merge) the children are upserted on their key and none
  deleted. A parent whose payload lacks the key keeps its children as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import RelationshipDirection

from deimos.errors import DeimosError

from .records import (
    Stamps,
    converter_for,
    primary_key_names,
    string_limits,
    truncate_strings,
)
from .upserts import Statements, execute_upserts

if TYPE_CHECKING:
    from .record_consumer import RecordConsumer, RecordMessage

_CHUNK = 1000


class Association:
    """One relationship of the model that payloads may carry rows of."""

    def __init__(self, owner: RecordConsumer, name: str, rel: Any) -> None:
        self.owner = owner
        self.name = name
        self.table: sa.Table = rel.mapper.local_table
        #: through an association table: a payload carrying it is refused
        self.many_to_many = (rel.secondary is not None
                             or rel.direction is RelationshipDirection.MANYTOMANY)
        self.many_to_one = rel.direction is RelationshipDirection.MANYTOONE
        #: (parent column, related column): the foreign key and what it points at
        self.pairs = [(local.name, remote.name) for local, remote in rel.local_remote_pairs]
        keys = owner.association_keys.get(name)
        self.key_cols = list(keys) if keys else primary_key_names(self.table)
        self.columns = frozenset(c.name for c in self.table.c)
        self.converters = [(c.name, conv) for c in self.table.c
                           if (conv := converter_for(c)) is not None]
        self.limits = string_limits(self.table) if owner.truncate_columns else {}
        self.stamps = Stamps(self.table)
        col = owner.bulk_import_id_column
        self.import_col = col if col and col in self.table.c else None
        self.statement = Statements(self.table, self.key_cols)

    def row(self, item: Mapping[str, Any], now: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(item, Mapping):
            raise DeimosError(f"{type(self.owner).__name__}: {self.name!r} holds "
                              f"{type(item).__name__}, not a row (a dict of columns)")
        row = {k: v for k, v in item.items() if k in self.columns}
        for name, fn in self.converters:
            v = row.get(name)
            if v is not None:
                row[name] = fn(v)
        if self.limits:
            truncate_strings(row, self.limits)
        for name, value in now.items():
            row.setdefault(name, value)
        return row

    # -- many-to-one: saved before the parents ----------------------------------------------

    def save_first(self, conn: sa.Connection, messages: list[RecordMessage],
                   rows: list[dict[str, Any]]) -> None:
        now = self.stamps.now()
        pending: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (parent row, its row)
        for m, parent in zip(messages, rows):
            assert m.payload is not None
            if self.name not in m.payload:
                continue
            item = m.payload[self.name]
            if item is None:
                for local, _ in self.pairs:
                    parent[local] = None
                continue
            pending.append((parent, self.row(item, now)))
        if not pending:
            return
        remote = [r for _, r in self.pairs]
        unknown = [row for _, row in pending if any(row.get(c) is None for c in remote)]
        if unknown:
            stamp = self._import_column("the id the database gives a row written without it")
            for row in unknown:
                row[stamp] = self.owner.bulk_import_id_generator()
        execute_upserts(conn, [row for _, row in pending], self.statement,
                        self.owner.max_db_batch_size)
        if unknown:
            ids = self._read_back(conn, [row[stamp] for row in unknown], remote)
            for row in unknown:
                row.update(ids[row[stamp]])
        for parent, row in pending:
            for local, rcol in self.pairs:
                parent[local] = row[rcol]

    def _read_back(self, conn: sa.Connection, stamps: list[Any], cols: list[str]
                   ) -> dict[Any, dict[str, Any]]:
        t = self.table
        assert self.import_col is not None
        out: dict[Any, dict[str, Any]] = {}
        for start in range(0, len(stamps), _CHUNK):
            chunk = stamps[start:start + _CHUNK]
            for r in conn.execute(sa.select(t.c[self.import_col], *[t.c[c] for c in cols])
                                  .where(t.c[self.import_col].in_(chunk))):
                out[r[0]] = dict(zip(cols, r[1:]))
        return out

    def _import_column(self, why: str) -> str:
        if self.import_col is None:
            col = self.owner.bulk_import_id_column
            raise DeimosError(
                f"{type(self.owner).__name__}: association {self.name!r} writes rows of table "
                f"{self.table.name!r} without their {', '.join(r for _, r in self.pairs)}; "
                f"add a {col!r} column (a string of 36, the bulk_import_id_column) to that "
                f"table so {why} can be read back, or give it in the payload")
        return self.import_col

    # -- one-to-many: saved after the parents -----------------------------------------------

    def save_after(self, conn: sa.Connection, messages: list[RecordMessage],
                   rows: list[dict[str, Any]]) -> None:
        carried = [(m, row) for m, row in zip(messages, rows)
                   if m.payload is not None and self.name in m.payload]
        if not carried:
            return
        locals_ = [lc for lc, _ in self.pairs]
        missing = [row for _, row in carried if any(row.get(c) is None for c in locals_)]
        if missing:
            self._parent_refs(conn, missing, locals_)
        owner = self.owner
        import_id = (owner.bulk_import_id_generator()
                     if owner.replace_associations and self.import_col else None)
        now = self.stamps.now()
        children: list[dict[str, Any]] = []
        for m, parent in carried:
            assert m.payload is not None
            value = m.payload[self.name]
            items = value if isinstance(value, list) else ([] if value is None else [value])
            for item in items:
                child = self.row(item, now)
                for lc, rc in self.pairs:
                    child[rc] = parent[lc]
                if import_id is not None:
                    child[self.import_col] = import_id  # type: ignore[index]
                children.append(child)
        refs = list(dict.fromkeys(tuple(p[c] for c in locals_) for _, p in carried))
        if owner.replace_associations and import_id is None:
            self._delete_children(conn, refs, None)  # no stamp: replace by delete + insert
        execute_upserts(conn, children, self.statement, owner.max_db_batch_size)
        if import_id is not None:
            self._delete_children(conn, refs, import_id)

    def _parent_refs(self, conn: sa.Connection, rows: list[dict[str, Any]],
                     cols: list[str]) -> None:
        """Fill the parent columns the children point at (a generated id) from the rows just
        upserted, found by the consumer's key columns."""
        t = self.owner.table
        keys = self.owner.key_cols
        found: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        wanted = [tuple(r[k] for k in keys) for r in rows]
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            cond = (t.c[keys[0]].in_([k[0] for k in chunk]) if len(keys) == 1
                    else sa.tuple_(*[t.c[k] for k in keys]).in_(chunk))
            for r in conn.execute(sa.select(*[t.c[k] for k in keys], *[t.c[c] for c in cols])
                                  .where(cond)):
                found[tuple(r[:len(keys)])] = tuple(r[len(keys):])
        for row, key in zip(rows, wanted):
            row.update(zip(cols, found[key]))

    def _delete_children(self, conn: sa.Connection, refs: list[tuple[Any, ...]],
                         keep: Any) -> None:
        t = self.table
        fks = [t.c[rc] for _, rc in self.pairs]
        for start in range(0, len(refs), _CHUNK):
            chunk = refs[start:start + _CHUNK]
            cond = (fks[0].in_([r[0] for r in chunk]) if len(fks) == 1
                    else sa.tuple_(*fks).in_(chunk))
            stmt = t.delete().where(cond)
            if keep is not None:
                col = t.c[self.import_col]  # type: ignore[index]
                stmt = stmt.where(sa.or_(col.is_(None), col != keep))
            conn.execute(stmt)


def associations_of(owner: RecordConsumer, model: Any) -> dict[str, Association]:
    """The relationships of ``model`` payloads may carry (none for a ``Table``)."""
    if isinstance(model, sa.Table):
        return {}
    out: dict[str, Association] = {}
    for name, rel in sa.inspect(model).relationships.items():
        if not rel.viewonly:
            out[name] = Association(owner, name, rel)
    return out


class Writer:
    """Parent rows and their associations, written in the order the foreign keys need."""

    def __init__(self, owner: str, associations: dict[str, Association]) -> None:
        self.owner = owner
        usable = [a for a in associations.values() if not a.many_to_many]
        self.refused = [a.name for a in associations.values() if a.many_to_many]
        self.first = [a for a in usable if a.many_to_one]
        self.after = [a for a in usable if not a.many_to_one]

    def write(self, conn: sa.Connection, messages: list[RecordMessage],
              rows: list[dict[str, Any]], write_parents: Callable[[], None]) -> None:
        for name in self.refused:
            if any(m.payload is not None and name in m.payload for m in messages):
                raise DeimosError(f"{self.owner}: relationship {name!r} goes through an "
                                  "association table; payloads may carry one-to-many and "
                                  "many-to-one relationships only")
        for a in self.first:
            a.save_first(conn, messages, rows)
        write_parents()
        for a in self.after:
            a.save_after(conn, messages, rows)


__all__ = ["Association", "Writer", "associations_of"]
