"""Write the settings tables of docs/configuration.md from deimos's pydantic models.

    uv run python scripts/gen_config_reference.py          # rewrite the page
    uv run python scripts/gen_config_reference.py --check  # exit 1 when the page is stale

core/tests/test_docs.py runs the check, so a settings field cannot be added, renamed or
re-defaulted without the reference following.
"""

from __future__ import annotations

import enum
import sys
import types
import typing
from pathlib import Path
from typing import Any

import generated_page
from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from deimos import config as c

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN GENERATED: scripts/gen_config_reference.py -->"
END = "<!-- END GENERATED -->"

#: (section path as users write it, model, heading text)
SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("kafka", c.KafkaSettings, "Connection to the (default) cluster, shared by producers and "
                               "consumers."),
    ("kafka.clusters.NAME", c.ClusterSettings,
     "Another cluster producers and consumers may choose (`cluster = \"NAME\"`; see "
     "[Several clusters](clusters.md)): the keys of `kafka` but `clusters`, nothing "
     "inherited from it."),
    ("producers", c.ProducerSettings, "Every producer."),
    ("producers.topics[]", c.TopicSettings,
     "Topics `deimos.produce(topic, ...)` may publish to without a producer class."),
    ("consumers[]", c.ConsumerSettings, "One entry per consumer (`deimos run` starts them)."),
    ("consumers[].retry", c.RetrySettings,
     "When a failed message is tried again (every `on_error`; see "
     "[Consumers](consumers.md#errors))."),
    ("schema", c.SchemaSettings, "How payloads and keys are encoded."),
    ("metrics", c.MetricsSettings, "Metrics providers; every enabled provider gets every "
                                   "measurement (fan-out)."),
    ("tracing", c.TracingSettings, "Tracing providers; every enabled provider gets every span "
                                   "(fan-out)."),
    ("runner", c.RunnerSettings, "`deimos run`: the process that runs consumers and pollers."),
    ("health", c.HealthSettings, "Health endpoints and metrics pages over HTTP (see "
                                 "[Running in production](production.md))."),
    ("topics", c.TopicsSettings, "Declared topics for `deimos topics plan|apply` (see "
                                 "[Topics](topics.md))."),
    ("topics.defaults", c.TopicSpecSettings,
     "How a declared topic is created and kept; `topics.overrides.NAME` takes the same keys "
     "(env `DEIMOS_TOPICS__OVERRIDES__NAME__PARTITIONS`, ...)."),
]

#: descriptions of fields that have none in the model
DESCRIPTIONS: dict[str, str] = {
    "ClusterSettings.client_id": "`client.id` of every connection",
    "ClusterSettings.security_protocol": "`security.protocol`",
    "ClusterSettings.sasl_mechanism": "`sasl.mechanism`, e.g. `PLAIN`, `SCRAM-SHA-512`",
    "ClusterSettings.sasl_username": "`sasl.username`",
    "ClusterSettings.sasl_password": "`sasl.password` (secret: masked everywhere)",
    "ClusterSettings.ssl_ca_location": "`ssl.ca.location`: CA certificate file",
    "ClusterSettings.ssl_certificate_location": "`ssl.certificate.location`: client certificate",
    "ClusterSettings.ssl_key_location": "`ssl.key.location`: client private key",
    "ClusterSettings.ssl_key_password": "`ssl.key.password` (secret)",
    "TopicSettings.topic": "topic name (before `producers.topic_prefix`)",
    "TopicSettings.schema": "value schema name",
    "TopicSettings.namespace": "schema namespace",
    "TopicSettings.key_config": "how the key is made: `\"none\"`, `\"plain\"`, "
                                "`{field = \"id\"}` or `{schema = \"Key\"}`",
    "TopicSettings.backend": "producer backend for this topic (default `producers.backend`)",
    "ProducerSettings.topic_prefix": "prefix added to every topic produced to",
    "ProducerSettings.disabled": "send nothing (calls return without publishing)",
    "ProducerSettings.max_batch_size": "messages handed to the backend per call",
    "ProducerSettings.idempotence": "librdkafka `enable.idempotence`",
    "ProducerSettings.topics": "see `producers.topics[]` below",
    "RetrySettings.max_backoff": "seconds, the longest wait between retries",
    "RetrySettings.multiplier": "each retry waits this many times longer",
    "ConsumerSettings.name": "name in logs, metrics and `deimos run --consumer` "
                             "(default: the class name)",
    "ConsumerSettings.topics": "topics to subscribe to (`\"a,b\"` is accepted)",
    "ConsumerSettings.topic_pattern": "regular expression of topics, instead of `topics`",
    "ConsumerSettings.group_id": "consumer group (default: the consumer's name)",
    "ConsumerSettings.schema": "value schema name",
    "ConsumerSettings.namespace": "schema namespace",
    "ConsumerSettings.key_config": "how keys are decoded (as for producers); unset means "
                                   "the class's own",
    "ConsumerSettings.start_from_beginning": "a new group starts at the earliest offset",
    "ConsumerSettings.max_batch_size": "messages per batch handed to a batch consumer",
    "ConsumerSettings.session_timeout_ms": "librdkafka `session.timeout.ms`",
    "ConsumerSettings.payload_log": "what is logged about a failed message",
    "ConsumerSettings.on_error": "what a handler error does to the message",
    "ConsumerSettings.retry": "see `consumers[].retry` below",
    "ConsumerSettings.dead_letter_topic": "topic failed messages go to with "
                                          "`on_error = \"dead_letter\"` (with "
                                          "`\"retry_topics\"`: after the last rung)",
    "ConsumerSettings.use_schema_classes": "hand generated schema classes to the handler "
                                           "(default `schema.use_schema_classes`)",
    "ConsumerSettings.disabled": "do not start this consumer",
    "SchemaSettings.registry_url": (
        "schema registry URL: `http(s)://...` (user info in it is sent as basic auth, never in "
        "the URL), `mock://NAME` (in-memory, one process), `file://PATH` (the development "
        "registry, shared by local processes; `deimos run`/`tail`/`demo` use it when this is "
        "unset)"),
    "SchemaSettings.user": "schema registry user",
    "SchemaSettings.password": "schema registry password (secret)",
    "SchemaSettings.path": "directory of local schema files",
    "SchemaSettings.use_schema_classes": "consumers get generated classes instead of dicts",
    "SchemaSettings.generated_class_path": "package of generated schema classes",
    "MetricsSettings.providers": "entry-point names of the enabled providers "
                                 "(`\"log,mock\"` is accepted)",
    "TracingSettings.providers": "entry-point names of the enabled providers",
    "DbSettings.producer": "see `db.producer` below",
}


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return "table" if args[1] is not str else "table of string"
    if annotation is type(None):
        return "none"
    if annotation is SecretStr:
        return "secret string"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def default_text(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default_factory() if field.default_factory else field.default
    if isinstance(value, BaseModel):
        return "defaults below" if type(value) is not c.KeyConfig else '`"none"`'
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if value in ({}, []):
        return "`{}`" if isinstance(value, dict) else "`[]`"
    return f"`{value}`"


def constraints(field: Any) -> str:
    out = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            if getattr(meta, attr, None) is not None:
                out.append(f"{sign} {getattr(meta, attr)}")
    return f" ({', '.join(out)})" if out else ""


def key_of(name: str, field: Any) -> str:
    return field.alias or name


def rows(model: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    out = []
    for name, field in model.model_fields.items():
        key = key_of(name, field)
        # a field a section inherits is described once, under the class defining it
        description = field.description or next(
            (DESCRIPTIONS[f"{k.__name__}.{key}"] for k in model.__mro__
             if f"{k.__name__}.{key}" in DESCRIPTIONS), None)
        if not description:
            raise SystemExit(f"no description for {model.__name__}.{key}: add one to the "
                             "model or to DESCRIPTIONS")
        out.append((key, type_name(field.annotation) + constraints(field),
                    default_text(field), description))
    return out


def _nested(path: str, model: type[BaseModel]) -> list[tuple[str, type[BaseModel], str]]:
    """A section and the tables inside it (``db.producer``, ``db.pollers[]``, ...)."""
    text = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    out = [(path, model, text)]
    for name, field in model.model_fields.items():
        annotation = field.annotation
        suffix = ""
        if typing.get_origin(annotation) is list:
            annotation, suffix = typing.get_args(annotation)[0], "[]"
        if (isinstance(annotation, type) and issubclass(annotation, BaseModel)
                and annotation is not c.KeyConfig):
            out += _nested(f"{path}.{key_of(name, field)}{suffix}", annotation)
    return out


def plugin_sections() -> list[tuple[str, type[BaseModel], str]]:
    """The sections the plugins of this workspace add (``deimos_settings_sections``), each
    under a heading saying which plugin it belongs to."""
    out: list[tuple[str, type[BaseModel], str]] = []
    for name, model in sorted(c._plugin_sections().items()):
        if name in ("template", "jsonl"):  # the plugin template's and an example plugin's
            continue
        module = model.__module__.split(".")[0]
        rows_ = _nested(name, model)
        first = rows_[0]
        rows_[0] = (first[0], first[1],
                    f"{first[2]} (plugin `{module.replace('_', '-', 1)}`)".strip())
        out += rows_
    return out


def generate() -> str:
    parts = []
    # top-level values (not sections): each a heading of its own
    for name, field in c.Settings.model_fields.items():
        annotation = field.annotation
        if any(isinstance(a, type) and issubclass(a, BaseModel)
               for a in [annotation, *typing.get_args(annotation)]):
            continue
        if typing.get_origin(annotation) is list:
            continue
        key = key_of(name, field)
        parts.append(f"### `{key}`\n")
        parts.append("| key | type | default | description |")
        parts.append("|---|---|---|---|")
        parts.append(f"| `{key}` | {type_name(annotation)} | {default_text(field)} | "
                     f"{field.description}; env `DEIMOS_{key.upper()}` |")
        parts.append("")
    for path, model, text in [*SECTIONS, *plugin_sections()]:
        text = text.replace("``", "`")  # docstrings are reStructuredText
        parts.append(f"### `{path}`\n\n{text}\n")
        parts.append("| key | type | default | description |")
        parts.append("|---|---|---|---|")
        for key, typ, default, description in rows(model):
            env = "DEIMOS_" + "__".join(
                p.replace("[]", "__0").upper() for p in [*path.split("."), key])
            description = description.replace("``", "`")
            parts.append(f"| `{key}` | {typ} | {default} | {description}; "
                         f"env `{env}` |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str]) -> int:
    return generated_page.main(argv, PAGE, BEGIN, END, generate, "scripts/gen_config_reference.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
