"""What a consumer decodes, wherever deimos shows a message: ``deimos tail`` of a dead-letter
topic decodes with the original consumer's Avro schema (no ``--schema``) and prints ISO-8601
timestamps; ``deimos_integration.messages`` decodes with the schema of the producer of the
topic; ``assert_sent`` compares the payload a consumer would decode (Avro defaults filled).

``avro_local`` writes schema-less Avro binary, so nothing can be decoded without the right
schema: these tests fail if the schema is not found from the configuration.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import deimos
import deimos.commands  # registers the commands on cli
from deimos.cli import cli

SCHEMAS = Path(__file__).parents[1] / "plugins" / "avro" / "tests" / "schemas"
DEFAULTS = {"tags": [], "color": "RED", "part": None, "shape": None}


class Widgets(deimos.Producer):
    schema = "Widget"
    namespace = "com.example"
    key_config = "plain"


@pytest.mark.kafka
def test_tail_decodes_a_dead_letter_topic_with_the_original_consumers_schema(
        deimos_kafka: str, deimos_reset: None, deimos_topic: Any) -> None:
    topic, dead = deimos_topic(), deimos_topic()
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     schema={"backend": "avro_local", "path": str(SCHEMAS)},
                     producers={"backend": "kafka"},
                     consumers=[{"name": "widgets", "topics": [topic], "schema": "Widget",
                                 "namespace": "com.example", "key_config": "plain",
                                 "on_error": "dead_letter", "dead_letter_topic": dead}])

    class DeadLetterWriter(deimos.Producer):
        """Writes what a dead letter holds: the original Avro bytes, key and headers."""

        schema, namespace, key_config = "Widget", "com.example", "plain"

    DeadLetterWriter.topic = dead
    DeadLetterWriter.publish({"id": 7, "name": "cog"}, key="w7", headers={
        "deimos-original-topic": topic, "deimos-error-class": "builtins.ValueError"})
    DeadLetterWriter.topic = f"unused-{dead}"  # only the consumer's settings may decode it
    out = CliRunner().invoke(cli, ["tail", dead, "-n", "1", "--json"])
    assert out.exit_code == 0, out.output
    row = json.loads(out.output)
    assert row["payload"] == {"id": 7, "name": "cog", **DEFAULTS}
    assert row["key"] == "w7"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row["timestamp"]), row
    table = CliRunner().invoke(cli, ["tail", dead, "-n", "1"])
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", table.output), table.output


@pytest.mark.kafka
def test_integration_messages_decode_with_the_producers_schema(deimos_integration: Any
                                                               ) -> None:
    deimos.configure(schema={"backend": "avro_local", "path": str(SCHEMAS)})
    topic = deimos_integration.create_topic()
    Widgets.topic = topic
    Widgets.publish({"id": 1, "name": "gear"}, key="w1")
    [got] = deimos_integration.messages(topic, 1)
    assert got.payload == {"id": 1, "name": "gear", **DEFAULTS} and got.key == "w1"
    [raw] = deimos_integration.messages(topic, 1, decode=False)
    assert isinstance(raw.payload, bytes)


def test_assert_sent_compares_what_a_consumer_decodes(deimos_test_mode: Any) -> None:
    deimos.configure(schema={"backend": "avro_local", "path": str(SCHEMAS)})
    Widgets.topic = "widgets-wire"
    Widgets.publish({"id": 1, "name": "gear"}, key="w1")
    # the Avro defaults a consumer gets, as well as the payload as passed
    deimos_test_mode.assert_sent("widgets-wire", {"id": 1, "name": "gear", **DEFAULTS})
    deimos_test_mode.assert_sent("widgets-wire", {"id": 1, "name": "gear"})
    deimos_test_mode.assert_sent_including("widgets-wire", {"color": "RED"})
    with pytest.raises(AssertionError) as info:
        deimos_test_mode.assert_sent("widgets-wire", {"id": 1, "name": "gear",
                                                      **DEFAULTS, "color": "BLUE"})
    assert '"color": "RED"' in str(info.value)  # the diff shows the decoded payload
