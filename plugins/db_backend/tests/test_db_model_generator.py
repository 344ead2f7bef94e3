"""``deimos db model`` (Ruby Deimos's ``rails g deimos:active_record``): a model generated from
an Avro schema creates its table on SQLite, PostgreSQL and MariaDB, and a record consumer
writes messages of that schema into it through the real consume path."""

from __future__ import annotations

import datetime as _dt
import decimal
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa

import deimos
from deimos.testing import consume_batch
from deimos_db import RecordConsumer, dispose_engines, get_engine
from deimos_db_helpers import ALL_DATABASES

SHOP_ITEM = {
    "type": "record", "name": "ShopItem", "namespace": "com.shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "qty", "type": "int"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10,
                                   "scale": 2}},
        {"name": "colour", "type": {"type": "enum", "name": "Colour",
                                    "symbols": ["RED", "GREEN"]}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "seen_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "class", "type": "boolean"},
    ]}


def generate(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deimos", "--config", str(tmp / "deimos.toml"), "db", "model",
         *args], capture_output=True, text=True, timeout=120, check=False, cwd=tmp)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("modelgen")
    (tmp / "schemas" / "com" / "shop").mkdir(parents=True)
    (tmp / "schemas" / "com" / "shop" / "ShopItem.avsc").write_text(json.dumps(SHOP_ITEM))
    (tmp / "deimos.toml").write_text(
        f'[schema]\nbackend = "avro_local"\npath = "{tmp / "schemas"}"\n')
    return tmp


@pytest.fixture(scope="module")
def generated(project: Path) -> ModuleType:
    done = generate(project, "com.shop.ShopItem", "--output", str(project / "shop_items.py"))
    assert done.returncode == 0, done.stderr
    spec = importlib.util.spec_from_file_location("shop_items", project / "shop_items.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["shop_items"] = module  # SQLAlchemy resolves annotations through it
    spec.loader.exec_module(module)
    return module


def test_the_generated_module_is_lint_and_type_clean(project: Path, generated: ModuleType
                                                     ) -> None:
    path = str(project / "shop_items.py")
    for tool in (["ruff", "check", "--select", "E,F,W,I,UP", path],
                 ["mypy", "--strict", "--ignore-missing-imports", path]):
        done = subprocess.run([sys.executable, "-m", *tool], capture_output=True, text=True,
                              check=False, cwd=project)
        assert done.returncode == 0, done.stdout + done.stderr


def test_columns_follow_the_schema(generated: ModuleType) -> None:
    table = generated.ShopItem.__table__
    assert table.name == "shop_items"
    assert [c.name for c in table.primary_key] == ["id"]
    c = table.c
    assert isinstance(c.name.type, sa.String) and c.name.type.length == 255
    assert isinstance(c.qty.type, sa.Integer) and isinstance(c.id.type, sa.BigInteger)
    assert isinstance(c.price.type, sa.Numeric)
    assert isinstance(c.colour.type, sa.Enum) and c.colour.type.enums == ["RED", "GREEN"]
    assert c.note.nullable and not c.name.nullable
    assert isinstance(c.seen_at.type, sa.DateTime) and c.seen_at.type.timezone
    assert isinstance(c.tags.type, sa.JSON)
    assert "class" in c and generated.ShopItem.class_ is not None  # a keyword, renamed
    assert {"created_at", "updated_at"} <= set(c.keys())


def test_no_id_field_gets_an_autoincrement_key(tmp_path: Path) -> None:
    from deimos.schema.base import SchemaField
    from deimos_db.modelgen import model_source

    text = model_source([SchemaField("sku", "string"), SchemaField("n", "int64")],
                        schema="shop.Stock", table="stock", class_name="Stock")
    namespace: dict[str, Any] = {"__name__": "stock_model"}
    sys.modules["stock_model"] = type(sys)("stock_model")
    sys.modules["stock_model"].__dict__.update(namespace)
    exec(compile(text, "stock_model.py", "exec"), sys.modules["stock_model"].__dict__)
    stock = sys.modules["stock_model"].Stock
    engine = sa.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    stock.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(stock.__table__), [{"sku": "a", "n": 1}, {"sku": "b", "n": 2}])
        assert [r.id for r in conn.execute(sa.select(stock.__table__))] == [1, 2]


def test_errors_name_the_field_or_schema(project: Path) -> None:
    out = generate(project, "com.shop.ShopItem", "--primary-key", "nope")
    assert out.returncode == 2 and "--primary-key 'nope'" in out.stderr
    assert "Traceback" not in out.stderr
    missing = generate(project, "com.shop.Missing")
    assert missing.returncode == 2 and "com.shop.Missing" in missing.stderr


@pytest.fixture
def db(deimos_database: str, deimos_test_mode: Any, project: Path, generated: ModuleType
       ) -> Iterator[sa.Engine]:
    deimos.configure(schema={"backend": "avro_local", "path": str(project / "schemas")},
                     db={"url": deimos_database})
    engine = get_engine(deimos_database)
    generated.Base.metadata.create_all(engine)
    yield engine
    generated.Base.metadata.drop_all(engine)
    dispose_engines()


@ALL_DATABASES
def test_a_record_consumer_writes_the_schemas_messages_into_the_generated_table(
        db: sa.Engine, generated: ModuleType) -> None:
    class Items(RecordConsumer):
        topic = "shop-items"
        group_id = "shop-items"
        schema = "ShopItem"
        namespace = "com.shop"
        key_config = {"field": "id"}
        model = generated.ShopItem

    seen = _dt.datetime(2026, 12, 2, 12, 30, 15, 250000, tzinfo=_dt.timezone.utc)
    item = {"id": 7, "name": "gear", "qty": 3, "price": decimal.Decimal("12.50"),
            "colour": "GREEN", "note": None, "seen_at": seen, "tags": ["a", "b"],
            "class": True}
    consume_batch(Items, [item, {**item, "id": 8, "note": "n", "colour": "RED"}], keys=[7, 8])
    with db.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(generated.ShopItem.__table__))}
    assert set(rows) == {7, 8}
    r = rows[7]
    assert (r.name, r.qty, r.price, r.colour, r.note, r.tags, r[8]) == (
        "gear", 3, decimal.Decimal("12.50"), "GREEN", None, ["a", "b"], True)
    stored = r.seen_at if r.seen_at.tzinfo else r.seen_at.replace(tzinfo=_dt.timezone.utc)
    assert stored == seen
    assert rows[8].note == "n" and rows[8].created_at is not None
