"""Multi-table record consumers, ``deleted_query``, ``truncate_columns`` and ``deadlock_retry``
in one file, no broker needed.

    python plugins/db_backend/examples/multi_table_example.py

A temporary SQLite database; the consumer is fed batches through deimos's test helpers, which
run the real consume path (decoding, error policy).
"""

from __future__ import annotations

import tempfile

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

import deimos
import deimos_db
from deimos.testing import consume_batch, test_mode
from deimos_db import RecordConsumer, RecordMessage


class Base(DeclarativeBase):
    pass


class Brand(Base):
    __tablename__ = "brands"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    # stamped on rows written without their id, to read back the id they got
    bulk_import_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)


class Widget(Base):
    __tablename__ = "widgets"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(20))
    archived: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    brand_id: Mapped[int | None] = mapped_column(sa.ForeignKey("brands.id"), nullable=True)
    brand: Mapped[Brand | None] = relationship()         # many-to-one: saved first
    details: Mapped[list[Detail]] = relationship()       # one-to-many: saved after


class Detail(Base):
    __tablename__ = "details"
    id: Mapped[int] = mapped_column(primary_key=True)
    widget_id: Mapped[int] = mapped_column(sa.ForeignKey("widgets.id"))
    title: Mapped[str] = mapped_column(sa.String(50))
    # this batch's import id: the widget's other details are deleted (replace_associations)
    bulk_import_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)


class WidgetConsumer(RecordConsumer):
    topic = "widgets"
    group_id = "widget-sync"
    key_config = "plain"
    model = Widget
    truncate_columns = True  # a name longer than 20 characters is cut, not refused

    def deleted_query(self, messages: list[RecordMessage]) -> sa.Executable:
        # a tombstone archives the widget instead of deleting it
        ids = [m.key_values["id"] for m in messages]
        return self.table.update().where(self.table.c.id.in_(ids)).values(archived=True)


def consume_demo() -> None:
    with test_mode():
        consume_batch(WidgetConsumer, [
            {"id": 1, "name": "teapot", "brand": {"name": "acme"},
             "details": [{"title": "red"}, {"title": "blue"}]},
            {"id": 2, "name": "a widget with a rather long name", "details": [{"title": "x"}]},
        ], keys=[1, 2])
        # widget 1's details become exactly these; widget 2 is archived
        consume_batch(WidgetConsumer, [
            {"id": 1, "name": "teapot", "details": [{"title": "green"}]},
            None,
        ], keys=[1, 2])


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{d}/example.sqlite"
        deimos.configure(schema={"backend": "mock"}, db={"url": url})
        engine = deimos_db.get_engine(url)
        Base.metadata.create_all(engine)
        consume_demo()
        with Session(engine) as session:
            for w in session.scalars(sa.select(Widget).order_by(Widget.id)):
                print(w.id, w.name, w.archived, w.brand.name if w.brand else None,
                      sorted(d.title for d in w.details))

        # your own transaction, run again after a deadlock or lock timeout
        def rename(session: Session) -> int:
            session.execute(sa.update(Widget).where(Widget.id == 1).values(name="kettle"))
            return 1

        print("renamed:", deimos_db.deadlock_retry(rename, engine=engine))
        deimos_db.dispose_engines()


if __name__ == "__main__":
    main()
