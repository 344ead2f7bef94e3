"""deimos.testing: test mode, consuming without a broker, assertions on sent messages.

The plugin is exercised the way users meet it, through pytest's ``pytester``: each test
writes a small test module, runs pytest on it and checks the outcome and the failure text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

AVRO_SCHEMAS = Path(__file__).resolve().parents[2] / "plugins" / "avro" / "tests" / "schemas"

CONFTEST = f'''
import pytest
import deimos
from deimos.consumer import Consumer, BatchConsumer

SCHEMAS = {str(AVRO_SCHEMAS)!r}


@pytest.fixture(autouse=True)
def settings(deimos_reset):
    deimos.configure(schema={{"backend": "avro_schema_registry", "path": SCHEMAS,
                              "registry_url": "http://registry.invalid:1"}},
                     producers={{"backend": "kafka"}},
                     kafka={{"bootstrap_servers": "127.0.0.1:1"}})


class WidgetProducer(deimos.Producer):
    topic = "widgets"
    schema = "Widget"
    namespace = "com.example"
    key_config = {{"field": "id"}}


class WidgetConsumer(Consumer):
    topic = "widgets"
    schema = "Widget"
    namespace = "com.example"
    key_config = {{"field": "id"}}
    group_id = "widgets"
    seen = []

    def consume(self, payload, metadata):
        if payload["name"] == "boom":
            raise RuntimeError("boom")
        type(self).seen.append((payload["name"], metadata.key, metadata.headers,
                                metadata.partition))


class WidgetBatchConsumer(BatchConsumer):
    topic = "widgets"
    schema = "Widget"
    namespace = "com.example"
    key_config = {{"field": "id"}}
    batches = []

    def consume_batch(self, payloads, metadata):
        type(self).batches.append(([p["name"] for p in payloads], metadata.keys))
'''


@pytest.fixture
def run(pytester: pytest.Pytester):
    pytester.makeconftest(CONFTEST)

    def run(source: str, *args: str) -> pytest.RunResult:
        pytester.makepyfile(test_user=source)
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", *args)

    return run


def test_producers_use_the_test_backend_and_the_validating_stand_in(run):
    result = run('''
from conftest import WidgetProducer

def test_it(deimos_test_mode):
    WidgetProducer.publish({"id": 7, "name": "w", "color": "BLUE"}, headers={"h": "1"})
    m = deimos_test_mode.assert_sent("widgets", {"id": 7, "name": "w", "color": "BLUE"},
                                     key=7, headers={"h": b"1"})
    # avro_validation's bytes are Avro JSON, not the registry's wire format
    assert m.encoded_payload.startswith(b"{")
    assert len(deimos_test_mode.sent_messages) == 1
''')
    result.assert_outcomes(passed=1)


def test_invalid_payload_fails_with_field_paths(run):
    result = run('''
import pytest
from deimos.errors import SchemaValidationError
from conftest import WidgetProducer, WidgetConsumer

def test_produce(deimos_test_mode):
    with pytest.raises(SchemaValidationError, match="color"):
        WidgetProducer.publish({"id": 7, "name": "w", "color": "PURPLE"})

def test_consume(deimos_test_mode):
    deimos_test_mode.consume_message(WidgetConsumer, {"id": "x", "name": 3})
''')
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*payload given to the test helper is not valid*",
                                 "*id: *", "*name: *"])


def test_consume_message_decodes_keys_headers_and_applies_the_error_policy(run):
    result = run('''
import pytest
from conftest import WidgetConsumer

def test_handled(deimos_test_mode):
    WidgetConsumer.seen.clear()
    deimos_test_mode.consume_message(WidgetConsumer, {"id": 1, "name": "a"}, key=1,
                                     headers={"trace": "t"}, partition=3)
    assert WidgetConsumer.seen == [("a", 1, {"trace": b"t"}, 3)]

def test_topic_of_a_configured_consumer(deimos_test_mode):
    import deimos
    deimos.configure(deimos.get_settings(), consumers=[{"class": "conftest:WidgetConsumer"}])
    WidgetConsumer.seen.clear()
    deimos_test_mode.consume_message("widgets", {"id": 2, "name": "b"}, key=2)
    assert WidgetConsumer.seen[0][:2] == ("b", 2)

def test_raise_is_the_default(deimos_test_mode):
    with pytest.raises(RuntimeError, match="boom"):
        deimos_test_mode.consume_message(WidgetConsumer, {"id": 1, "name": "boom"}, key=1)

def test_skip(deimos_test_mode):
    deimos_test_mode.consume_message(WidgetConsumer, {"id": 1, "name": "boom"}, key=1,
                                     on_error="skip")

def test_dead_letter_goes_to_sent_messages(deimos_test_mode):
    deimos_test_mode.consume_message(WidgetConsumer, {"id": 1, "name": "boom"}, key=1,
                                     on_error="dead_letter", dead_letter_topic="dlq",
                                     retry={"attempts": 2})
    m = deimos_test_mode.assert_sent("dlq", headers={"deimos-attempts": "2",
                                                     "deimos-original-topic": "widgets"})
    assert b"boom" in dict(m.headers)["deimos-error-message"]
''')
    result.assert_outcomes(passed=5)


def test_consume_batch(run):
    result = run('''
from conftest import WidgetBatchConsumer

def test_batch(deimos_test_mode):
    WidgetBatchConsumer.batches.clear()
    deimos_test_mode.consume_batch(WidgetBatchConsumer, [{"id": 1, "name": "a"},
                                                         {"id": 2, "name": "b"}], keys=[1, 2])
    assert WidgetBatchConsumer.batches == [(["a", "b"], [1, 2])]
''')
    result.assert_outcomes(passed=1)


def test_assert_sent_failure_shows_a_diff_against_the_closest_message(run):
    result = run('''
from conftest import WidgetProducer

def test_it(deimos_test_mode):
    WidgetProducer.publish_list([{"id": 1, "name": "one"}, {"id": 2, "name": "two"}])
    deimos_test_mode.assert_sent_including("widgets", {"id": 2, "name": "TWO"})
''')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*none of the 2 message(s) sent to 'widgets'*closest differs in payload*",
        '*-*"name": "TWO"*', '*+*"name": "two"*'])


def test_assert_sent_including_matches_a_subset_and_reports_other_topics(run):
    result = run('''
import pytest
from conftest import WidgetProducer

def test_subset(deimos_test_mode):
    WidgetProducer.publish({"id": 1, "name": "one", "part": {"sku": "s", "qty": 2}})
    deimos_test_mode.assert_sent_including("widgets", {"part": {"qty": 2}}, key=1)
    with pytest.raises(AssertionError, match="no message was sent to 'gadgets'.*widgets"):
        deimos_test_mode.assert_sent("gadgets")
    with pytest.raises(AssertionError, match="1 message"):
        deimos_test_mode.assert_not_sent("widgets")
''')
    result.assert_outcomes(passed=1)


def test_nothing_leaks_between_tests(run):
    result = run('''
import deimos
from deimos.runtime import get_runtime
from conftest import WidgetProducer

def test_first(deimos_test_mode):
    deimos.configure(deimos.get_settings(), producers={"topic_prefix": "x."})
    WidgetProducer.publish({"id": 1, "name": "a"})
    # test mode followed the reconfiguration
    assert get_runtime().backend_override == "test"
    deimos_test_mode.assert_sent("widgets", key=1)

def test_second(deimos_test_mode):
    assert deimos.get_settings().producers.topic_prefix == ""
    assert deimos_test_mode.sent_messages == []

def test_outside_test_mode():
    rt = get_runtime()
    assert rt.backend_override is None and rt.schema_override is None
    assert rt.backend().name == "kafka"
''')
    result.assert_outcomes(passed=3)


def test_helpers_need_test_mode(run):
    result = run('''
from deimos.testing import consume_message
from conftest import WidgetConsumer

def test_it():
    consume_message(WidgetConsumer, {"id": 1, "name": "a"}, key=1)
''')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*need test mode*deimos_test_mode*"])


def test_context_manager_and_module_functions(run):
    result = run('''
from deimos.testing import assert_sent, sent_messages, test_mode
from conftest import WidgetProducer

def test_it():
    with test_mode():
        WidgetProducer.publish({"id": 3, "name": "c"})
        assert_sent("widgets", key=3)
        assert [m.key for m in sent_messages("widgets")] == [3]
''')
    result.assert_outcomes(passed=1)
