"""Several clusters in one process, on two real brokers: producers and consumers choose their
cluster, ``deimos.producer_for`` finds the producer of a topic, a producer's own librdkafka
properties get a producer of their own, dead letters go to the consumer's cluster unless
``dead_letter_cluster`` says otherwise, and ``deimos tail``/``lag``/``topics`` take
``--cluster``.

The second broker is an embedded Tansu (``deimos_second_kafka``, per module; the session broker is
the default cluster). Every check reads both brokers: a message on the wrong one fails it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kafka_helpers import LoopThread, committed, group_settings, read_all, wait_for

import deimos
import deimos.commands  # registers the commands on cli
from deimos import config as _config
from deimos import topics
from deimos.cli import cli
from deimos.consumer import Consumer, ConsumerLoop, resolve_settings
from deimos.errors import ConfigError, PublishError
from deimos.inline import get_messages_for
from deimos.kafka import producers as kafka_producers
from deimos.kafka.config import cluster_settings, producer_config
from deimos.lag import LagReporter
from deimos.runtime import Runtime
from deimos.testing.broker import create_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
def two(deimos_kafka: str, deimos_second_kafka: str, deimos_reset: None) -> tuple[str, str]:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka,
                            "clusters": {"analytics": {"bootstrap_servers": deimos_second_kafka}}},
                     producers={"backend": "kafka"})
    return deimos_kafka, deimos_second_kafka


def _both(a: str, b: str) -> str:
    """A topic of the same name on both brokers, so a message on the wrong one is seen."""
    name = f"c-{uuid.uuid4().hex[:10]}"
    create_topic(a, name)
    create_topic(b, name)
    return name


def _values(bootstrap: str, topic: str) -> list[str]:
    """Every value on ``topic`` at ``bootstrap`` now (its watermarks: the topics here get one
    record per produce request, see RULES/Tansu)."""
    settings = _config.build_settings({"kafka": {"bootstrap_servers": bootstrap}},
                                      environ={}).settings
    return [m.payload for m in get_messages_for(topic, 100, settings=settings)]


def test_producers_publish_to_the_cluster_they_choose(two: tuple[str, str]) -> None:
    a, b = two
    topic = _both(a, b)

    class ToDefault(deimos.Producer):
        pass

    class ToAnalytics(deimos.Producer):
        cluster = "analytics"

    ToDefault.topic = ToAnalytics.topic = topic
    ToDefault.publish("on-default", sync=True)
    ToAnalytics.publish("on-analytics", sync=True)
    ToAnalytics.publish("async-on-analytics")
    assert deimos.flush(10) == 0
    assert _values(a, topic) == ["on-default"]
    assert _values(b, topic) == ["on-analytics", "async-on-analytics"]
    # one shared producer per cluster, each connected to its own brokers
    bootstraps = {sp.bootstrap for sp in kafka_producers._pool.values()}
    assert {a, b} <= bootstraps


def test_producer_for_and_configured_topics_use_their_cluster(two: tuple[str, str]) -> None:
    a, b = two
    configured, classed = _both(a, b), _both(a, b)
    deimos.configure(producers={"topics": [{"topic": configured, "cluster": "analytics"}]})

    class Clicks(deimos.Producer):
        cluster = "analytics"

    Clicks.topic = classed
    assert deimos.producer_for(classed) is Clicks
    made = deimos.producer_for(configured)
    assert made.cluster == "analytics" and made.topic == configured
    assert deimos.producer_for(configured) is made  # made once per settings
    made.publish("via-producer-for", sync=True)
    deimos.producer_for(classed).publish("class-via-producer-for", sync=True)
    deimos.produce(configured, ["via-produce"], sync=True)
    assert _values(b, configured) == ["via-producer-for", "via-produce"]
    assert _values(b, classed) == ["class-via-producer-for"]
    assert _values(a, configured) == [] and _values(a, classed) == []
    with pytest.raises(deimos.DeimosError, match="no producer for topic 'nope'"):
        deimos.producer_for("nope")


def test_a_producers_own_librdkafka_properties_get_a_producer_of_their_own(
        two: tuple[str, str]) -> None:
    a, _ = two
    topic = _both(*two)

    class Small(deimos.Producer):
        kafka_config = {"message.max.bytes": 2000}

    class Plain(deimos.Producer):
        pass

    Small.topic = Plain.topic = topic
    big = "x" * 5000
    # the client refuses the message before sending: this producer has its own limit
    with pytest.raises(PublishError, match="MSG_SIZE_TOO_LARGE"):
        Small.publish(big, sync=True)
    Plain.publish(big, sync=True)  # the shared producer of the others is unaffected
    assert [len(v) for v in _values(a, topic)] == [5000]
    view = Small._pipeline().kafka_settings
    assert producer_config(view)["message.max.bytes"] == 2000
    assert "message.max.bytes" not in producer_config(_config.get_settings())


class _FailOdd(Consumer):
    """Fails every odd value: those go to the dead-letter topic."""

    seen: list[str] = []

    def consume(self, payload: Any, metadata: Any) -> None:
        if int(payload) % 2:
            raise ValueError(payload)
        self.seen.append(payload)


def test_a_consumer_reads_its_cluster_and_dead_letters_go_to_the_chosen_one(
        two: tuple[str, str]) -> None:
    a, b = two
    topic, to_own, to_default = _both(a, b), _both(a, b), _both(a, b)

    class Feed(deimos.Producer):
        cluster = "analytics"

    Feed.topic = topic
    Feed.publish_list(["1", "2", "3", "4"], sync=True)

    class Own(_FailOdd):
        seen: list[str] = []

    class ToDefault(_FailOdd):
        seen: list[str] = []

    Own.topic = ToDefault.topic = topic
    # both groups join at once (a join takes seconds on Tansu)
    own = group_settings(Own, cluster="analytics", on_error="dead_letter",
                         dead_letter_topic=to_own, retry={"attempts": 1})
    other = group_settings(ToDefault, cluster="analytics", on_error="dead_letter",
                           dead_letter_topic=to_default, dead_letter_cluster="default",
                           retry={"attempts": 1})
    loops = [LoopThread(Own, own).start(), LoopThread(ToDefault, other).start()]
    try:
        for s in (own, other):
            wait_for(lambda s=s: committed(b, s.group_id, topic) == 4, what="commit on b")
    finally:
        for loop in loops:
            loop.stop()
    assert [loop.error for loop in loops] == [None, None]
    assert Own.seen == ToDefault.seen == ["2", "4"]
    # dead letters: the consumer's own cluster, unless dead_letter_cluster says otherwise
    assert [m.value() for m in read_all(b, to_own, 2)] == [b"1", b"3"]
    assert [m.value() for m in read_all(a, to_default, 2)] == [b"1", b"3"]
    assert _values(a, to_own) == [] and _values(b, to_default) == []


def test_unknown_clusters_are_settings_errors(two: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"consumers\.0\.dead_letter_cluster: cluster "
                                          r"'nope' is not configured .*default, analytics"):
        deimos.configure(consumers=[{"name": "x", "dead_letter_cluster": "nope"}])
    with pytest.raises(ConfigError, match=r"producers\.topics\.0\.cluster: cluster 'nope'"):
        deimos.configure(producers={"topics": [{"topic": "t", "cluster": "nope"}]})
    with pytest.raises(ConfigError, match="'default' names the kafka section itself"):
        _config.build_settings({"kafka": {"clusters": {"default": {}}}}, environ={})

    class Lost(deimos.Producer):
        topic = "t"
        cluster = "nope"

    with pytest.raises(ConfigError, match=r"producer Lost\.cluster: cluster 'nope'"):
        Lost.publish("x")
    # a consumer class's own names are checked before its loop starts
    for attrs, where in (({"cluster": "nope"}, "cluster"),
                         ({"dead_letter_cluster": "nope"}, "dead_letter_cluster")):
        cs = resolve_settings(_FailOdd, name="odd", topics=["t"], group_id="g",
                              on_error="dead_letter", dead_letter_topic="d", **attrs)
        with pytest.raises(ConfigError, match=rf"consumer odd\.{where}: cluster 'nope'"):
            ConsumerLoop(_FailOdd, cs)
    # a named cluster inherits nothing from the kafka section (credentials stay apart)
    settings = _config.build_settings({"kafka": {
        "sasl_username": "u", "sasl_password": "p", "security_protocol": "SASL_SSL",
        "clusters": {"other": {"bootstrap_servers": "o:9092"}}}}, environ={}).settings
    conf = producer_config(cluster_settings(settings, "other"))
    assert conf["bootstrap.servers"] == "o:9092"
    assert not {"sasl.username", "sasl.password", "security.protocol"} & set(conf)
    env = _config.build_settings(environ={
        "DEIMOS_KAFKA__CLUSTERS__ANALYTICS__BOOTSTRAP_SERVERS": "e:1",
        "DEIMOS_KAFKA__CLUSTERS__ANALYTICS__CONFIG__SOCKET_TIMEOUT_MS": "1234"}).settings
    assert env.kafka.clusters["analytics"].bootstrap_servers == "e:1"
    assert env.kafka.clusters["analytics"].config == {"socket.timeout.ms": "1234"}


def test_tail_lag_and_topics_take_a_cluster(two: tuple[str, str], tmp_path: Path) -> None:
    a, b = two
    topic = _both(a, b)
    dlq = f"c-{uuid.uuid4().hex[:10]}-dlq"
    group = f"g-{uuid.uuid4().hex[:10]}"

    class Feed(deimos.Producer):
        cluster = "analytics"

    Feed.topic = topic
    for value in ("1", "2", "3"):  # one record per request: Tansu's watermarks
        Feed.publish(value, sync=True)
    cfg = tmp_path / "deimos.toml"
    cfg.write_text(f"""
[kafka]
bootstrap_servers = "{a}"
[kafka.clusters.analytics]
bootstrap_servers = "{b}"
[[consumers]]
name = "feed"
topics = ["{topic}"]
group_id = "{group}"
cluster = "analytics"
on_error = "dead_letter"
dead_letter_topic = "{dlq}"
""")
    runner = CliRunner()
    base = ["--config", str(cfg)]
    tailed = runner.invoke(cli, [*base, "tail", topic, "--json", "--cluster", "analytics"])
    assert tailed.exit_code == 0, tailed.output
    assert [json.loads(line)["payload"] for line in tailed.output.splitlines()] == \
        ["1", "2", "3"]
    empty = runner.invoke(cli, [*base, "tail", topic, "--json"])
    assert empty.exit_code == 0 and empty.output == ""  # the default cluster has none
    # lag: the configured group is measured on its consumer's cluster, with or without
    # --cluster; on the default cluster no consumer is configured
    for args in (["lag", "--json"], ["lag", "--json", "--cluster", "analytics"]):
        lag = runner.invoke(cli, [*base, *args])
        assert lag.exit_code == 0, lag.output
        assert [(r["group"], r["lag"]) for r in json.loads(lag.output)] == [(group, 3)]
    # deimos run's lag reporter measures each group on its consumers' cluster too
    settings = _config.build_settings(file=cfg, environ={}).settings
    rows = LagReporter(Runtime(settings)).report()
    assert [(r.group, r.topic, r.lag) for r in rows] == [(group, topic, 3)]
    none = runner.invoke(cli, [*base, "lag", "--cluster", "default"])
    assert none.exit_code != 0 and "no consumer group is configured on cluster" in none.output
    bad = runner.invoke(cli, [*base, "tail", topic, "--cluster", "nope"])
    assert bad.exit_code != 0 and "cluster 'nope' is not configured" in bad.output
    # topics: the consumer's topic and its dead letters belong to the analytics cluster
    plan = runner.invoke(cli, [*base, "topics", "plan", "--json", "--cluster", "analytics"])
    assert plan.exit_code == 0, plan.output
    assert {(c["topic"], c["action"]) for c in json.loads(plan.output)} == {
        (topic, "ok"), (dlq, "create")}
    default_plan = runner.invoke(cli, [*base, "topics", "plan", "--json"])
    assert default_plan.exit_code == 0 and json.loads(default_plan.output) == []
    assert not topics.apply(settings, cluster="analytics").errors
    assert dlq in topics_on(b) and dlq not in topics_on(a)


def topics_on(bootstrap: str) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def test_test_mode_needs_no_clusters_configured(deimos_test_mode: Any) -> None:
    """Unit tests in test mode publish nowhere: a producer or consumer naming a cluster the
    test settings do not configure still works there (as Ruby's test helpers stub
    producer_for)."""

    class Remote(deimos.Producer):
        topic = "remote"
        cluster = "analytics"

    Remote.publish("x")
    deimos_test_mode.assert_sent("remote", "x")

    class RemoteConsumer(_FailOdd):
        seen: list[str] = []
        topic = "remote"
        cluster = "analytics"
        dead_letter_cluster = "archive"

    deimos_test_mode.consume_message(RemoteConsumer, "2")
    assert RemoteConsumer.seen == ["2"]
