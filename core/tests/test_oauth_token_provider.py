"""``kafka.sasl_oauth_token_provider``: the named function becomes confluent-kafka's
``oauth_cb`` of every client deimos builds, per cluster, and a bad path is a settings error
naming the setting.

What this cannot show: a broker accepting the token. The embedded broker (Tansu) speaks no
SASL/OAUTHBEARER, so the tests stop at librdkafka calling the callback, which it does when a
client is created with ``sasl.mechanism = OAUTHBEARER`` (before any connection).
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deimos import config as _config
from deimos.config import ConsumerSettings
from deimos.errors import ConfigError
from deimos.kafka.config import cluster_settings, consumer_config, producer_config
from deimos.kafka.producers import SharedProducer
from deimos.runtime import Runtime

pytestmark = pytest.mark.kafka


@pytest.fixture
def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module with a token function recording what librdkafka handed it."""
    name = f"tokens_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import time

        calls = []

        def token(config):
            calls.append(config)
            return "a-token", time.time() + 3600

        not_callable = 5
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _settings(deimos_kafka: str, provider: str, **cluster: Any) -> _config.Settings:
    oauth = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "OAUTHBEARER",
             "config": {"sasl.oauthbearer.config": "scope=orders"}}
    return _config.build_settings({"kafka": {
        "bootstrap_servers": deimos_kafka,
        "clusters": {"secured": {"bootstrap_servers": deimos_kafka, **oauth,
                                 "sasl_oauth_token_provider": f"{provider}:token",
                                 **cluster}}}}, environ={}).settings


def test_the_provider_is_every_clients_oauth_cb_and_librdkafka_calls_it(
        deimos_kafka: str, provider: str) -> None:
    settings = _settings(deimos_kafka, provider)
    module = sys.modules.get(provider) or __import__(provider)
    secured = cluster_settings(settings, "secured")
    conf = producer_config(secured)
    assert conf["oauth_cb"] is module.token
    assert "oauth_cb" not in producer_config(settings)  # only the cluster that names it
    sp = SharedProducer(conf)
    try:
        assert module.calls == ["scope=orders"]
    finally:
        sp.close(0)
    # consumers are built from the same connection part (creating one takes librdkafka a
    # second with OAUTHBEARER, as the producer above did: one client shows the call)
    cs = ConsumerSettings(name="c", topics=["t"], group_id="g")
    assert consumer_config(secured, cs)["oauth_cb"] is module.token
    # shown as it is: a path is no secret
    assert _config.masked_dict(settings)["kafka"]["clusters"]["secured"][
        "sasl_oauth_token_provider"] == f"{provider}:token"


@pytest.mark.parametrize(("path", "message"), [
    ("{p}", "is not 'module:function'"),
    ("no_such_module_{u}:token", "cannot import 'no_such_module_"),
    ("{p}:missing", "has no 'missing'"),
    ("{p}:not_callable", "is not callable"),
])
def test_a_bad_provider_is_a_settings_error_naming_it(
        deimos_kafka: str, provider: str, path: str, message: str) -> None:
    path = path.format(p=provider, u=uuid.uuid4().hex[:6])
    with pytest.raises(ConfigError) as caught:
        Runtime(_settings(deimos_kafka, provider, sasl_oauth_token_provider=path))
    assert caught.value.errors[0][0] == "kafka.clusters.secured.sasl_oauth_token_provider"
    assert message in caught.value.errors[0][1]
