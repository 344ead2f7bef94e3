"""``deimos topics plan|apply`` on the real broker: the topics the settings imply are
created with their declared partitions and configs, a second run changes nothing, raised
partitions and changed configs are planned, and nothing is ever lowered or deleted.

Tansu (the embedded test broker) does not support CreatePartitions (KIP-195): librdkafka
reports ``_UNSUPPORTED_FEATURE`` from its ApiVersions. On Tansu the test checks that the raise
is planned and that apply reports the broker's refusal for that topic while applying the rest;
on a Kafka cluster (``DEIMOS_TEST_BOOTSTRAP_SERVERS``) it checks the partitions were raised.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient, ConfigResource

import deimos
import deimos.commands  # registers the commands on cli
from deimos import topics
from deimos.cli import cli

pytestmark = pytest.mark.kafka


class AuditProducer:
    """Stands for a DB poller's producer class: only its ``topic`` is read."""

    topic = "audit-log"


@pytest.fixture
def declared(deimos_kafka: str, deimos_reset: None) -> dict[str, str]:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    dlq = f"{prefix}orders-dlq"
    deimos.configure(
        kafka={"bootstrap_servers": deimos_kafka},
        producers={"topic_prefix": prefix, "topics": [{"topic": "payments"}]},
        consumers=[{"name": "orders", "topics": ["orders"], "group_id": "orders",
                    "on_error": "dead_letter", "dead_letter_topic": dlq}],
        topics={"defaults": {"partitions": 2, "config": {"retention.ms": 3600000}},
                "overrides": {"payments": {"partitions": 3,
                                           "config": {"cleanup.policy": "compact"}},
                              "audit": {}}},
    )
    return {"orders": prefix + "orders", "dlq": dlq, "payments": prefix + "payments",
            "audit": prefix + "audit", "bootstrap": deimos_kafka}


def describe(bootstrap: str, name: str, *keys: str) -> tuple[int, dict[str, str | None]]:
    """Partitions and the configs ``keys`` of topic ``name`` (Kafka describes every config,
    Tansu only those set)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(name, timeout=10).topics[name]
    [future] = admin.describe_configs([ConfigResource("topic", name)]).values()
    configs = future.result(10)
    return len(md.partitions), {k: configs[k].value if k in configs else None for k in keys}


def test_plan_apply_creates_the_implied_topics_and_is_idempotent(declared: dict[str, str]
                                                                  ) -> None:
    runner = CliRunner()
    plan = runner.invoke(cli, ["topics", "plan", "--detailed-exitcode"])
    assert plan.exit_code == 2, plan.output
    assert f"+ {declared['orders']}: create (2 partition(s)" in plan.output
    assert f"+ {declared['dlq']}: create (2 partition(s)" in plan.output
    assert (f"+ {declared['payments']}: create (3 partition(s), replication factor broker "
            "default, cleanup.policy=compact, retention.ms=3600000)") in plan.output
    assert f"+ {declared['audit']}: create" in plan.output

    applied = runner.invoke(cli, ["topics", "apply"])
    assert applied.exit_code == 0, applied.output
    assert applied.output.count("created ") == 4
    assert describe(declared["bootstrap"], declared["payments"], "cleanup.policy",
                    "retention.ms") == (3, {"cleanup.policy": "compact",
                                            "retention.ms": "3600000"})
    assert describe(declared["bootstrap"], declared["dlq"])[0] == 2

    # a second run: nothing to do, and apply changes nothing
    again = runner.invoke(cli, ["topics", "plan", "--detailed-exitcode", "--json"])
    assert again.exit_code == 0, again.output
    assert {c["action"] for c in json.loads(again.output)} == {"ok"}
    reapplied = runner.invoke(cli, ["topics", "apply"])
    assert reapplied.exit_code == 0 and "created" not in reapplied.output, reapplied.output


def test_raised_partitions_and_changed_configs_are_applied_never_lowered(
        declared: dict[str, str]) -> None:
    settings = deimos.get_settings()
    assert not topics.apply(settings).errors
    deimos.configure(topics={"overrides": {
        "payments": {"partitions": 5, "config": {"cleanup.policy": "compact"}},
        "audit": {"partitions": 1, "config": {"retention.ms": 7200000}}}})
    settings = deimos.get_settings()
    changes = {c.name: c for c in topics.plan(settings)}
    payments, audit = changes[declared["payments"]], changes[declared["audit"]]
    assert payments.action == "update" and payments.add_partitions_to == 5
    assert payments.describe() == [f"~ {declared['payments']}: partitions 3 -> 5"]
    assert audit.action == "update" and audit.add_partitions_to is None
    assert audit.config_changes == {"retention.ms": ("3600000", "7200000")}
    assert audit.warnings == ["has 2 partitions, the settings say 1: partitions are never "
                              "removed (Kafka cannot)"]
    assert changes[declared["orders"]].action == "ok"

    result = topics.apply(settings)
    assert result.configs_set == [declared["audit"]]
    assert describe(declared["bootstrap"], declared["audit"], "retention.ms") == (
        2, {"retention.ms": "7200000"})
    if result.errors:  # Tansu: no CreatePartitions (see the module doc)
        [(name, error)] = result.errors
        assert name == declared["payments"] and "CreatePartitions" in error, error
        assert describe(declared["bootstrap"], name)[0] == 3
    else:
        assert result.partitions_raised == [declared["payments"]]
        assert describe(declared["bootstrap"], declared["payments"])[0] == 5
    after = {c.name: c for c in topics.plan(settings)}
    assert after[declared["audit"]].action == "warn"  # config applied; 1 partition refused


def test_implied_topics_name_their_sources(deimos_reset: None) -> None:
    deimos.configure(
        producers={"topic_prefix": "p-"},
        consumers=[{"name": "c", "topics": ["a", "b"], "on_error": "dead_letter",
                    "dead_letter_topic": "a-dlq"},
                   {"name": "off", "topics": ["never"], "disabled": True}],
        db={"pollers": [{"producer_class": f"{__name__}:AuditProducer"}]},
        topics={"overrides": {"extra": {"partitions": 4}}})
    implied: dict[str, Any] = topics.implied_topics(deimos.get_settings())
    assert implied == {"p-a": ["consumer c"], "p-b": ["consumer c"],
                       "a-dlq": ["dead letters of consumer c"],
                       "p-audit-log": [f"DB poller {__name__}:AuditProducer"],
                       "p-extra": ["topics.overrides"]}
    [extra] = [s for s in topics.wanted_topics(deimos.get_settings()) if s.name == "p-extra"]
    assert extra.partitions == 4 and extra.replication_factor is None


def test_unreachable_brokers_give_one_error_naming_the_setting(deimos_reset: None) -> None:
    from deimos.testing.broker import _free_port

    deimos.configure(kafka={"bootstrap_servers": f"127.0.0.1:{_free_port()}"},
                     consumers=[{"name": "c", "topics": ["a"]}])
    out = CliRunner().invoke(cli, ["topics", "plan", "--timeout", "1"])
    assert out.exit_code == 1
    assert "cannot reach Kafka at kafka.bootstrap_servers = 127.0.0.1:" in out.output
    assert "Traceback" not in out.output and len(out.output.splitlines()) <= 2, out.output
