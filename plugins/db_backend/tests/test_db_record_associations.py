"""Multi-table record consumers on SQLite, PostgreSQL and MariaDB: a payload carrying a parent
and the rows of its relationships saves them in one transaction, children replaced (with and
without a ``bulk_import_id`` column) or merged, many-to-one rows saved first, a generated
parent id read back by the key columns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

import deimos
from deimos.errors import DeimosError
from deimos.testing import consume_batch
from deimos_db import RecordConsumer, dispose_engines, get_engine
from deimos_db_helpers import ALL_DATABASES, batch_metadata

pytestmark = ALL_DATABASES


class Base(DeclarativeBase):
    pass


class Brand(Base):
    __tablename__ = "brands"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    bulk_import_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)


class Maker(Base):  # no bulk_import_id: its rows need their id in the payload
    __tablename__ = "makers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))


class Widget(Base):
    __tablename__ = "widgets"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(50))
    brand_id: Mapped[int | None] = mapped_column(sa.ForeignKey("brands.id"), nullable=True)
    maker_id: Mapped[int | None] = mapped_column(sa.ForeignKey("makers.id"), nullable=True)
    brand: Mapped[Brand | None] = relationship()
    maker: Mapped[Maker | None] = relationship()
    details: Mapped[list[Detail]] = relationship()
    parts: Mapped[list[Part]] = relationship()


class Detail(Base):  # children with bulk_import_id: replaced by stamp
    __tablename__ = "details"
    id: Mapped[int] = mapped_column(primary_key=True)
    widget_id: Mapped[int] = mapped_column(sa.ForeignKey("widgets.id"))
    title: Mapped[str] = mapped_column(sa.String(50))
    bulk_import_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)


class Part(Base):  # children without it: replaced by delete and insert
    __tablename__ = "parts"
    id: Mapped[int] = mapped_column(primary_key=True)
    widget_id: Mapped[int] = mapped_column(sa.ForeignKey("widgets.id"))
    sku: Mapped[str] = mapped_column(sa.String(20))


class Shop(Base):  # a generated id and a natural key
    __tablename__ = "shops"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(10), unique=True)
    shelves: Mapped[list[Shelf]] = relationship()


class Shelf(Base):
    __tablename__ = "shelves"
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(sa.ForeignKey("shops.id"))
    label: Mapped[str] = mapped_column(sa.String(20))


class Widgets(RecordConsumer):
    topic = "widgets"
    group_id = "widgets-group"
    key_config = "plain"
    model = Widget


class Shops(RecordConsumer):
    topic = "shops"
    group_id = "shops-group"
    key_config = {"field": "code"}
    model = Shop
    key_columns = ("code",)


@pytest.fixture
def db(deimos_database: str, deimos_test_mode: Any) -> Iterator[sa.Engine]:
    deimos.configure(schema={"backend": "mock"}, db={"url": deimos_database})
    engine = get_engine(deimos_database)
    Base.metadata.create_all(engine)
    yield engine
    dispose_engines()


def select(engine: sa.Engine, model: Any, *cols: str) -> list[tuple[Any, ...]]:
    t = model.__table__
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(
            sa.select(*[t.c[c] for c in cols])))


def test_children_are_replaced_by_import_id_keeping_given_rows_and_absent_keys(db):
    consume_batch(Widgets, [{"id": 1, "name": "w1", "details": [{"title": "a"}, {"title": "b"}]},
                            {"id": 2, "name": "w2", "details": [{"title": "c"}]}], keys=[1, 2])
    details = select(db, Detail, "widget_id", "title", "id")
    assert [d[:2] for d in details] == [(1, "a"), (1, "b"), (2, "c")]
    a_id = details[0][2]
    # w1: "a" updated in place (its id given), "b" gone, "d" new; w2 does not carry details
    consume_batch(Widgets, [{"id": 1, "name": "w1", "details": [{"id": a_id, "title": "a2"},
                                                               {"title": "d"}]},
                            {"id": 2, "name": "w2b"}], keys=[1, 2])
    assert [d[:2] for d in select(db, Detail, "widget_id", "title", "id")] == [
        (1, "a2"), (1, "d"), (2, "c")]
    assert (a_id, "a2") in select(db, Detail, "id", "title")
    assert select(db, Widget, "id", "name") == [(1, "w1"), (2, "w2b")]
    # an empty list clears a parent's children
    consume_batch(Widgets, [{"id": 1, "name": "w1", "details": []}], keys=[1])
    assert select(db, Detail, "widget_id", "title") == [(2, "c")]


def test_children_without_an_import_id_column_are_deleted_and_inserted(db):
    consume_batch(Widgets, [{"id": 1, "name": "w", "parts": [{"sku": "x"}, {"sku": "y"}]}],
                  keys=[1])
    consume_batch(Widgets, [{"id": 1, "name": "w", "parts": [{"sku": "z"}]}], keys=[1])
    assert select(db, Part, "widget_id", "sku") == [(1, "z")]


def test_merged_children_are_upserted_and_none_deleted(db):
    class Merging(Widgets):
        replace_associations = False

    consume_batch(Merging, [{"id": 1, "name": "w", "details": [{"title": "a"}]}], keys=[1])
    (a_id,) = select(db, Detail, "id")[0]
    consume_batch(Merging, [{"id": 1, "name": "w", "details": [{"id": a_id, "title": "a2"},
                                                              {"title": "b"}]}], keys=[1])
    assert select(db, Detail, "widget_id", "title") == [(1, "a2"), (1, "b")]


def test_many_to_one_rows_are_saved_first_and_their_ids_set_on_the_parent(db):
    consume_batch(Widgets, [{"id": 1, "name": "w1", "brand": {"name": "acme"}},
                            {"id": 2, "name": "w2", "brand": {"name": "zeta"},
                             "maker": {"id": 7, "name": "m7"}}], keys=[1, 2])
    brands = dict((n, i) for i, n in select(db, Brand, "id", "name"))
    assert select(db, Widget, "id", "brand_id", "maker_id") == [
        (1, brands["acme"], None), (2, brands["zeta"], 7)]
    # a given id upserts the related row; None clears the parent's foreign key
    consume_batch(Widgets, [{"id": 2, "name": "w2", "brand": {"id": brands["zeta"],
                                                              "name": "zeta2"},
                             "maker": None}], keys=[2])
    assert (brands["zeta"], "zeta2") in select(db, Brand, "id", "name")
    assert select(db, Widget, "id", "maker_id") == [(1, None), (2, None)]
    # a related table without bulk_import_id needs the id in the payload
    with pytest.raises(DeimosError, match="'bulk_import_id' column"):
        Widgets().consume_batch([{"id": 3, "name": "w3", "maker": {"name": "m?"}}],
                                batch_metadata("widgets", [3]))
    assert 3 not in [r[0] for r in select(db, Widget, "id")]


def test_a_generated_parent_id_is_read_back_by_the_key_columns(db):
    consume_batch(Shops, [{"code": "n1", "shelves": [{"label": "top"}, {"label": "low"}]},
                          {"code": "s2", "shelves": [{"label": "mid"}]}], keys=["n1", "s2"])
    ids = dict(select(db, Shop, "code", "id"))
    assert select(db, Shelf, "shop_id", "label") == sorted(
        [(ids["n1"], "top"), (ids["n1"], "low"), (ids["s2"], "mid")])


def test_a_bad_child_rolls_back_its_parent_and_the_other_messages_land(db):
    from deimos.consumer import BatchError

    handler = Widgets()
    with pytest.raises(BatchError) as info:
        handler.consume_batch([{"id": 1, "name": "w1", "details": [{"title": "ok"}]},
                               {"id": 2, "name": "w2", "details": [{"title": None}]},
                               {"id": 3, "name": "w3", "parts": [{"sku": "s"}]}],
                              batch_metadata("widgets", [1, 2, 3]))
    assert info.value.index == 1 and [f.index for f in handler.failures] == [1]
    assert select(db, Widget, "id") == [(1,), (3,)]
    assert select(db, Detail, "widget_id", "title") == [(1, "ok")]
    assert select(db, Part, "widget_id", "sku") == [(3, "s")]


class Tag(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(20))


gizmo_tags = sa.Table("gizmo_tags", Base.metadata,
                      sa.Column("gizmo_id", sa.ForeignKey("gizmos.id"), primary_key=True),
                      sa.Column("tag_id", sa.ForeignKey("tags.id"), primary_key=True))


class Gizmo(Base):
    __tablename__ = "gizmos"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(20))
    tags: Mapped[list[Tag]] = relationship(secondary=gizmo_tags)


def test_a_many_to_many_relationship_is_refused_only_when_a_payload_carries_it(db):
    class Gizmos(RecordConsumer):
        topic = "gizmos"
        key_config = "plain"
        model = Gizmo

    consume_batch(Gizmos, [{"id": 1, "name": "g"}], keys=[1])  # the model works as before
    assert select(db, Gizmo, "id", "name") == [(1, "g")]
    with pytest.raises(DeimosError, match="'tags' goes through an association table"):
        Gizmos().consume_batch([{"id": 2, "name": "h", "tags": [{"label": "x"}]}],
                               batch_metadata("gizmos", [2]))
