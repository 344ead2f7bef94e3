"""Typed schema classes: snapshots of the generated code, mypy --strict and ruff on it,
round trips, ``deimos schemas generate|check``, and consumers receiving instances.

Regenerate the snapshots after an intended change with ``DEIMOS_UPDATE_SNAPSHOTS=1``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import deimos
import deimos.commands  # registers the commands on cli
from deimos.cli import cli
from deimos.consumer import Consumer
from deimos.schema_classes import generate, write
from deimos.testing import assert_sent, consume_message, test_mode

HERE = Path(__file__).parent
DATA = HERE / "schema_classes_data"
SCHEMAS = DATA / "schemas"
EXPECTED = DATA / "expected"
ROOT = HERE.parents[1]
AVRO_SCHEMAS = ROOT / "plugins" / "avro" / "tests" / "schemas"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return generate(SCHEMAS)


@pytest.mark.parametrize("name", ["__init__.py", "com_acme.py", "com_acme_shared.py"])
def test_generated_code_matches_the_snapshot(generated: dict[str, str], name: str) -> None:
    snapshot = EXPECTED / f"{name}.txt"
    if os.environ.get("DEIMOS_UPDATE_SNAPSHOTS"):
        snapshot.write_text(generated[name])
    assert generated[name] == snapshot.read_text()


@pytest.mark.parametrize("schema, expected", [
    ("flat", ["class Flat:", "    count: int = 0", "    from_: str = \"here\"",
              "    note: str | None = None", "    blob: bytes = b''"]),
    ("nested", ["    customer: Customer", "    lines: list[Line] = field(default_factory=list)",
                "    price: _com_acme_shared.Money",
                "            customer=Customer.from_dict(data[\"customer\"]),"]),
    ("enum", ["class Status(enum.Enum):", "    PAID = \"PAID\"",
              "    status: Status = Status.NEW", "            \"status\": self.status.value,"]),
    ("union", ["    method: Card | BankTransfer | None = None",
               "    amount: int | float | str", "def _union_0(value: Any) -> Card | "
               "BankTransfer | None:", "        if keys == {\"iban\", \"reference\"}:"]),
    ("key", ["class OrderKey:", "    \"\"\"Key of the orders topic.\"\"\"",
             "    def tombstone(cls, key: Any) -> Tombstone:"]),
])
def test_each_kind_of_schema_generates_what_it_should(generated: dict[str, str], schema: str,
                                                      expected: list[str]) -> None:
    code = generated["com_acme.py"]
    for line in expected:
        assert line in code.splitlines() or line in code, f"{schema}: {line!r} missing"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, generated: dict[str, str]) -> Path:
    root = tmp_path_factory.mktemp("gen")
    write(generated, root / "acme_classes")
    return root


@pytest.mark.slow
def test_generated_code_passes_mypy_strict(package: Path) -> None:
    env = {**os.environ, "MYPYPATH": str(ROOT / "core" / "src")}
    result = subprocess.run([str(BIN / "mypy"), "--strict", "--no-incremental",
                             "--python-version", "3.10", "acme_classes"],
                            cwd=package, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_passes_ruff(package: Path) -> None:
    result = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "--isolated",
                             "--select", "E,F,W,I,B,UP,SIM,RUF", "--line-length", "100",
                             "--target-version", "py310", "acme_classes"],
                            cwd=package, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def acme(package: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(package))
    return importlib.import_module("acme_classes")


def test_round_trip_nested_enum_union_and_defaults(acme: Any) -> None:
    m = acme.com_acme
    order = m.Order.from_dict({
        "order_id": "o1", "status": "PAID",
        "customer": {"email": "a@b", "address": {"city": "Berlin"}},
        "lines": [{"sku": "s", "qty": 2, "price": {"cents": 150, "currency": "EUR"}}],
        "attributes": {"gift": "yes"}, "history": ["NEW", "PAID"]})
    assert order.status is m.Status.PAID
    assert order.customer.address.city == "Berlin"
    assert order.lines[0].price == acme.com_acme_shared.Money(cents=150)
    assert order.history == [m.Status.NEW, m.Status.PAID]
    assert order.to_dict()["lines"] == [{"sku": "s", "qty": 2,
                                         "price": {"cents": 150, "currency": "EUR"}}]
    assert m.Order.from_dict(order.to_dict()) == order
    fresh = m.Order(order_id="o2", customer=m.Customer(email="x"))
    assert fresh.status is m.Status.NEW and fresh.history == [m.Status.NEW]
    assert fresh.lines == [] and fresh.lines is not m.Order(order_id="o3",
                                                              customer=fresh.customer).lines
    pay = m.Payment.from_dict({"payment_id": "p", "method": {"iban": "DE1", "reference": "r"},
                               "amount": 2.5, "outcome": "SHIPPED"})
    assert isinstance(pay.method, m.BankTransfer) and pay.outcome is m.Status.SHIPPED
    assert pay.to_dict() == {"payment_id": "p", "method": {"iban": "DE1", "reference": "r"},
                             "amount": 2.5, "outcome": "SHIPPED"}
    assert isinstance(m.Payment.from_dict({"payment_id": "p", "method": {"last4": "1234"},
                                           "amount": 3}).method, m.Card)
    with pytest.raises(ValueError, match="matches no branch"):
        m.Payment.from_dict({"payment_id": "p", "amount": [1]})
    flat = m.Flat.from_dict({"id": 1, "name": "n", "from": "there"})
    assert flat.from_ == "there" and flat.to_dict()["from"] == "there"
    assert repr(m.OrderKey.tombstone("o1")) == "Tombstone('o1')"


def test_schemas_generate_and_check_commands(tmp_path: Path, deimos_reset: None) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    out = tmp_path / "classes"
    runner = CliRunner()
    env = {"DEIMOS_SCHEMA__PATH": str(schemas),
           "DEIMOS_SCHEMA__GENERATED_CLASS_PATH": str(out)}
    first = runner.invoke(cli, ["schemas", "check"], env=env)
    assert first.exit_code == 1 and "missing" in first.output
    gen = runner.invoke(cli, ["schemas", "generate"], env=env)
    assert gen.exit_code == 0, gen.output
    assert (out / "com_acme.py").read_text() == (EXPECTED / "com_acme.py.txt").read_text()
    ok = runner.invoke(cli, ["schemas", "check"], env=env)
    assert ok.exit_code == 0, ok.output
    # a schema changes: the check fails and names the stale file
    key = schemas / "com" / "acme" / "OrderKey.avsc"
    key.write_text(key.read_text().replace('"string"', '"long"'))
    stale = runner.invoke(cli, ["schemas", "check"], env=env)
    assert stale.exit_code == 1 and "com_acme.py: out of date" in stale.output
    # a namespace disappears: its module is reported, then removed by generate
    shutil.rmtree(schemas / "com" / "acme" / "shared")
    (schemas / "com" / "acme" / "Order.avsc").unlink()
    gone = runner.invoke(cli, ["schemas", "check"], env=env)
    assert "com_acme_shared.py: generated from a schema that no longer exists" in gone.output
    assert runner.invoke(cli, ["schemas", "generate"], env=env).exit_code == 0
    assert not (out / "com_acme_shared.py").exists()
    assert runner.invoke(cli, ["schemas", "check"], env=env).exit_code == 0


# ---------------------------------------------------------------------------------------------
# producers accept instances, consumers receive them
# ---------------------------------------------------------------------------------------------


class WidgetConsumer(Consumer):
    topic = "widgets"
    schema = "Widget"
    namespace = "com.example"
    group_id = "g"
    received: list[Any] = []

    def consume(self, payload: Any, metadata: Any) -> None:
        type(self).received.append(payload)


class WidgetProducer(deimos.Producer):
    topic = "widgets"
    schema = "Widget"
    namespace = "com.example"
    key_config = {"field": "id"}


@pytest.fixture
def widget_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deimos_reset: None
                   ) -> Any:
    # the Avro plugin's test schemas include a deliberately broken one: leave it out
    schemas = tmp_path / "schemas"
    shutil.copytree(AVRO_SCHEMAS, schemas, ignore=shutil.ignore_patterns("Broken.avsc"))
    write(generate(schemas), tmp_path / "widget_classes")
    monkeypatch.syspath_prepend(str(tmp_path))
    WidgetConsumer.received = []
    return importlib.import_module("widget_classes")


def _configure(**schema: Any) -> None:
    deimos.configure(schema={"backend": "avro_schema_registry", "path": str(AVRO_SCHEMAS),
                             "generated_class_path": "widget_classes", **schema})


def test_consumers_receive_instances_when_the_setting_is_on(widget_classes: Any) -> None:
    w = widget_classes.com_example
    _configure(use_schema_classes=True)
    with test_mode():
        consume_message(WidgetConsumer, {"id": 1, "name": "a", "color": "GREEN",
                                         "shape": {"radius": 2.0}})
    got = WidgetConsumer.received[0]
    assert isinstance(got, w.Widget) and got.color is w.Color.GREEN
    assert got.shape == w.Circle(radius=2.0)


def test_per_consumer_setting_and_default_off(widget_classes: Any) -> None:
    _configure()
    with test_mode():
        consume_message(WidgetConsumer, {"id": 1, "name": "a"})
        consume_message(WidgetConsumer, {"id": 2, "name": "b"}, use_schema_classes=True)
    plain, typed = WidgetConsumer.received
    assert plain["name"] == "a" and typed.name == "b"


def test_producers_accept_instances(widget_classes: Any) -> None:
    w = widget_classes.com_example
    _configure()
    with test_mode():
        WidgetProducer.publish(w.Widget(id=5, name="five", part=w.Part(sku="s", qty=1)))
        WidgetProducer.publish_list([w.Widget.tombstone(6)])
        assert_sent("widgets", w.Widget(id=5, name="five", part=w.Part(sku="s", qty=1)),
                    key=5)
        assert_sent("widgets", None, key=6)


def test_a_missing_generated_package_says_what_to_run(deimos_reset: None) -> None:
    deimos.configure(schema={"backend": "avro_schema_registry", "path": str(AVRO_SCHEMAS),
                             "generated_class_path": "no_such_classes",
                             "use_schema_classes": True})
    with test_mode(), pytest.raises(deimos.DeimosError, match="deimos schemas generate"):
        consume_message(WidgetConsumer, {"id": 1, "name": "a"})
