"""The development schema registry: Confluent's REST API answered from one JSON file, so every
local process (``deimos run``, ``deimos tail``, the demo, a test) shares schemas and ids
without a registry server.

``schema.registry_url = "file:///path/registry.json"`` selects it. The client
(:func:`dev_registry_client`) *is* confluent-kafka's ``SchemaRegistryClient`` (its caches,
serializers and deserializers work unchanged); only the transport differs: instead of HTTP,
each request is answered by
:class:`RegistryStore` under an exclusive file lock, with the paths, bodies, status codes and
error codes of Confluent's Schema Registry API reference:

- one global id per distinct schema (type, text and references): the same schema registered
  under two subjects gets one id, as on a real registry;
- versions per subject; registering a schema a subject already has returns its id and adds
  no version; ``POST /subjects/{subject}`` looks a schema up;
- 404 bodies ``{"error_code": 40401|40402|40403, "message": ...}``.
- ``POST /compatibility/subjects/{subject}/versions[/{version}]`` answers
  ``{"is_compatible": ...}`` (and ``messages`` with ``?verbose=true``) under the subject's
  level (``PUT /config[/{subject}]``, default ``BACKWARD``), the check made by the schema
  plugin that implements ``deimos_registry_compatibility`` (Avro: Apache Avro's checker).

What it does not do: enforce compatibility when a schema is registered (a real registry answers
409; here the check is only on request), normalization (``?normalize=true`` is accepted and
ignored; schemas compare as text, the strictest case), Protobuf text forms (a schema comes back
as it was registered, which is the serialized form both deimos and confluent-kafka register),
contexts, modes, exporters. It is for development machines; production uses a real registry.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process at a time
    fcntl = None  # type: ignore[assignment]

#: a request's answer: HTTP status and JSON body
Answer = tuple[int, Any]

_thread_lock = threading.Lock()


def default_path() -> Path:
    """Where ``deimos run``, ``deimos tail`` and the demo keep the development registry when
    no ``schema.registry_url`` is configured: ``$DEIMOS_DEV_REGISTRY``, else
    ``$XDG_CACHE_HOME/deimos/dev-registry.json`` (``~/.cache/...``)."""
    env = os.environ.get("DEIMOS_DEV_REGISTRY")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "deimos" / "dev-registry.json"


def default_url() -> str:
    return "file://" + str(default_path().absolute())


def path_of(url: str) -> Path:
    """``file:///a/b.json`` -> ``/a/b.json``; ``file://rel/b.json`` -> ``rel/b.json``."""
    return Path(unquote(url.removeprefix("file://")))


def _error(status: int, code: int, message: str) -> Answer:
    return status, {"error_code": code, "message": message}


def _schema_key(body: Mapping[str, Any]) -> str:
    refs = [{"name": r.get("name"), "subject": r.get("subject"), "version": r.get("version")}
            for r in body.get("references") or []]
    return json.dumps([body.get("schemaType") or "AVRO", body.get("schema"), refs])


class RegistryStore:
    """Subjects, versions and ids of Confluent's Schema Registry, kept in one JSON file.

    Every request reads the file, answers, and writes it back (atomically, by rename) while
    holding an exclusive ``flock`` on ``<file>.lock``: processes that share the file see each
    other's schemas at once and never hand out one id twice.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- the file ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _thread_lock, open(str(self.path) + ".lock", "a+") as lock:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                data = self._read()
                before = json.dumps(data, sort_keys=True)
                yield data
                if json.dumps(data, sort_keys=True) != before:
                    self._write(data)
            finally:
                if fcntl is not None:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""
        data = json.loads(text) if text.strip() else {}
        data.setdefault("next_id", 1)
        data.setdefault("schemas", {})
        data.setdefault("subjects", {})
        data.setdefault("config", {})
        return data

    def _write(self, data: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    # -- requests ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: Mapping[str, str] | None = None,
               body: Any = None) -> Answer:
        """Answer one REST request (``path`` without the leading slash, percent-encoded as
        sent; ``query`` as a dict)."""
        parts = [unquote(p) for p in path.strip("/").split("/")]
        q = dict(query or {})
        with self._locked() as data:
            return self._route(data, method.upper(), parts, q, body)

    def _route(self, data: dict[str, Any], method: str, parts: list[str],
               q: dict[str, str], body: Any) -> Answer:
        n = len(parts)
        if parts[0] == "schemas":
            if n == 2 and parts[1] == "types" and method == "GET":
                return 200, ["JSON", "PROTOBUF", "AVRO"]
            if n >= 3 and parts[1] == "ids" and method == "GET":
                return self._by_id(data, parts[2], parts[3] if n > 3 else None)
        elif parts[0] == "subjects":
            if n == 1 and method == "GET":
                return 200, sorted(s for s, vs in data["subjects"].items()
                                   if any(not v.get("deleted") for v in vs))
            subject = parts[1] if n > 1 else ""
            if n == 2 and method == "POST":
                return self._lookup(data, subject, body or {}, q)
            if n == 2 and method == "DELETE":
                return self._delete_subject(data, subject)
            if n == 3 and parts[2] == "versions":
                if method == "POST":
                    return self._register(data, subject, body or {})
                if method == "GET":
                    live = self._live(data, subject)
                    if live is None:
                        return self._no_subject(subject)
                    return 200, [v["version"] for v in live]
            if n == 4 and parts[2] == "versions":
                if method == "GET":
                    return self._version(data, subject, parts[3])
                if method == "DELETE":
                    return self._delete_version(data, subject, parts[3])
        elif parts[0] == "compatibility" and method == "POST":
            if n in (4, 5) and parts[1] == "subjects" and parts[3] == "versions":
                return self._compatibility(data, parts[2], parts[4] if n == 5 else None,
                                           body or {}, q)
        elif parts[0] == "config":
            key = parts[1] if n > 1 else ""
            if method == "GET":
                level = data["config"].get(key) or data["config"].get("", "BACKWARD")
                return 200, {"compatibilityLevel": level}
            if method == "PUT":
                level = (body or {}).get("compatibility", "BACKWARD")
                data["config"][key] = level
                return 200, {"compatibility": level}
        return _error(404, 404, "HTTP 404 Not Found")

    # -- answers -----------------------------------------------------------------------------

    @staticmethod
    def _public(entry: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": entry["schema"]}
        if entry.get("schemaType", "AVRO") != "AVRO":
            out["schemaType"] = entry["schemaType"]
        if entry.get("references"):
            out["references"] = entry["references"]
        return out

    def _by_id(self, data: dict[str, Any], raw_id: str, tail: str | None) -> Answer:
        entry = data["schemas"].get(raw_id)
        if entry is None:
            return _error(404, 40403, f"Schema {raw_id} not found")
        if tail is None:
            return 200, self._public(entry)
        uses = [(s, v["version"]) for s, vs in sorted(data["subjects"].items()) for v in vs
                if v["id"] == int(raw_id) and not v.get("deleted")]
        if tail == "versions":
            return 200, [{"subject": s, "version": v} for s, v in uses]
        if tail == "subjects":
            return 200, sorted({s for s, _ in uses})
        return _error(404, 404, "HTTP 404 Not Found")

    @staticmethod
    def _live(data: dict[str, Any], subject: str) -> list[dict[str, Any]] | None:
        versions = [v for v in data["subjects"].get(subject, []) if not v.get("deleted")]
        return versions or None

    @staticmethod
    def _no_subject(subject: str) -> Answer:
        return _error(404, 40401, f"Subject '{subject}' not found.")

    def _id_of(self, data: dict[str, Any], body: Mapping[str, Any]) -> int | None:
        key = _schema_key(body)
        for sid, entry in data["schemas"].items():
            if _schema_key(entry) == key:
                return int(sid)
        return None

    def _registered(self, data: dict[str, Any], subject: str, v: Mapping[str, Any]
                    ) -> dict[str, Any]:
        return {"subject": subject, "version": v["version"], "id": v["id"],
                **self._public(data["schemas"][str(v["id"])])}

    def _register(self, data: dict[str, Any], subject: str, body: Mapping[str, Any]
                  ) -> Answer:
        if not isinstance(body.get("schema"), str):
            return _error(422, 42201, "Either the input schema or one its references is "
                                      "invalid: no schema string")
        sid = self._id_of(data, body)
        versions = data["subjects"].setdefault(subject, [])
        if sid is not None:
            for v in versions:
                if v["id"] == sid and not v.get("deleted"):
                    return 200, {"id": sid}
        else:
            sid = data["next_id"]
            data["next_id"] = sid + 1
            data["schemas"][str(sid)] = {
                "schema": body["schema"], "schemaType": body.get("schemaType") or "AVRO",
                "references": list(body.get("references") or [])}
        version = max((v["version"] for v in versions), default=0) + 1
        versions.append({"version": version, "id": sid})
        return 200, {"id": sid}

    def _lookup(self, data: dict[str, Any], subject: str, body: Mapping[str, Any],
                q: Mapping[str, str]) -> Answer:
        deleted = str(q.get("deleted", "false")).lower() == "true"
        versions = [v for v in data["subjects"].get(subject, [])
                    if deleted or not v.get("deleted")]
        if not versions:
            return self._no_subject(subject)
        sid = self._id_of(data, body)
        for v in versions:
            if v["id"] == sid:
                return 200, self._registered(data, subject, v)
        return _error(404, 40403, "Schema not found")

    def _version(self, data: dict[str, Any], subject: str, which: str) -> Answer:
        live = self._live(data, subject)
        if live is None:
            return self._no_subject(subject)
        if which in ("latest", "-1"):
            return 200, self._registered(data, subject, live[-1])
        for v in live:
            if str(v["version"]) == which:
                return 200, self._registered(data, subject, v)
        return _error(404, 40402, f"Version {which} not found.")

    def _compatibility(self, data: dict[str, Any], subject: str, which: str | None,
                       body: Mapping[str, Any], q: Mapping[str, str]) -> Answer:
        """``POST /compatibility/subjects/{s}/versions[/{v}]``: the candidate against one
        version, or (no version) against what registering it would be checked against, in
        the direction the subject's level says; the check itself is the schema plugin's."""
        if not isinstance(body.get("schema"), str):
            return _error(422, 42201, "Either the input schema or one its references is "
                                      "invalid: no schema string")
        live = self._live(data, subject)
        if which is None:
            level = self._level(data, subject)
            against = (live or []) if level.endswith("_TRANSITIVE") else (live or [])[-1:]
        else:
            answer = self._version(data, subject, which)
            if answer[0] != 200:
                return answer
            against = [v for v in live or [] if v["id"] == answer[1]["id"]][-1:]
        level = self._level(data, subject)
        schema_type = body.get("schemaType") or "AVRO"
        problems: list[str] = []
        for v in against:
            old = data["schemas"][str(v["id"])]
            if (old.get("schemaType") or "AVRO") != schema_type:
                problems.append(f"version {v['version']} is {old.get('schemaType') or 'AVRO'}"
                                f", the candidate {schema_type}")
                continue
            pairs = []  # (what is checked, reader, writer)
            if level.startswith(("BACKWARD", "FULL")):
                pairs.append(("the new schema reading", body["schema"], old["schema"]))
            if level.startswith(("FORWARD", "FULL")):
                pairs.append(("reading the new schema with", old["schema"], body["schema"]))
            for role, reader, writer in pairs:
                found = check_compatibility(schema_type, reader, writer)
                if found is None:
                    return _error(422, 42201, f"the development registry cannot check "
                                              f"{schema_type} schemas: no installed plugin "
                                              "implements deimos_registry_compatibility")
                problems += [f"{role} version {v['version']}: {p}" for p in found]
        out: dict[str, Any] = {"is_compatible": not problems}
        if str(q.get("verbose", "false")).lower() == "true":
            out["messages"] = problems
        return 200, out

    @staticmethod
    def _level(data: dict[str, Any], subject: str) -> str:
        return str(data["config"].get(subject) or data["config"].get("") or "BACKWARD").upper()

    def _delete_subject(self, data: dict[str, Any], subject: str) -> Answer:
        live = self._live(data, subject)
        if live is None:
            return self._no_subject(subject)
        for v in live:
            v["deleted"] = True
        return 200, [v["version"] for v in live]

    def _delete_version(self, data: dict[str, Any], subject: str, which: str) -> Answer:
        live = self._live(data, subject)
        if live is None:
            return self._no_subject(subject)
        target = live[-1] if which == "latest" else next(
            (v for v in live if str(v["version"]) == which), None)
        if target is None:
            return _error(404, 40402, f"Version {which} not found.")
        target["deleted"] = True
        return 200, target["version"]


def check_compatibility(schema_type: str, reader: str, writer: str) -> list[str] | None:
    """The first installed plugin's answer to ``deimos_registry_compatibility`` (``None``:
    none checks ``schema_type``)."""
    from deimos.plugins import call_all, get_registry

    for answer in call_all(get_registry().all(), "deimos_registry_compatibility",
                           schema_type, reader, writer):
        if answer is not None:
            return list(answer)
    return None


class _Session:
    def close(self) -> None:
        pass


class _StoreRestClient:
    """confluent-kafka's REST client interface (``get``/``post``/``put``/``delete``) answered
    by a :class:`RegistryStore`; unsuccessful answers raise ``SchemaRegistryError`` as the HTTP
    client does."""

    def __init__(self, store: RegistryStore, template: Any) -> None:
        self.store = store
        self.session = _Session()
        # what SchemaRegistryClient reads from its REST client
        self.cache_capacity = template.cache_capacity
        self.cache_latest_ttl_sec = template.cache_latest_ttl_sec

    def _send(self, method: str, url: str, query: Mapping[str, Any] | None, body: Any) -> Any:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        parts = urlsplit(url)
        q = {k: str(v) for k, v in parse_qsl(parts.query)}
        q.update({k: str(v) for k, v in (query or {}).items()})
        # a round trip through JSON, as over HTTP: nobody shares objects with the store
        status, answer = self.store.handle(method, parts.path, q,
                                           None if body is None else json.loads(json.dumps(body)))
        if 200 <= status < 300:
            return answer
        raise SchemaRegistryError(status, answer.get("error_code", -1), answer.get("message"))

    def get(self, url: str, query: Mapping[str, Any] | None = None) -> Any:
        return self._send("GET", url, query, None)

    def post(self, url: str, body: Any, **kwargs: Any) -> Any:
        return self._send("POST", url, None, body)

    def put(self, url: str, body: Any = None) -> Any:
        return self._send("PUT", url, None, body)

    def delete(self, url: str, query: Mapping[str, Any] | None = None) -> Any:
        return self._send("DELETE", url, query, None)


def _client_class() -> type:
    from deimos.schema.registry import import_client_module

    import_client_module()
    from confluent_kafka.schema_registry import SchemaRegistryClient

    class DevRegistryClient(SchemaRegistryClient):
        """confluent-kafka's client with the development store as its transport."""

        def __init__(self, conf: dict[str, Any]) -> None:
            conf = dict(conf)
            url = conf.pop("url")
            conf.pop("basic.auth.user.info", None)
            # Built as an HTTP client first so every option is validated and the caches are
            # made as confluent-kafka makes them; the HTTP session is never used.
            super().__init__({**conf, "url": "http://deimos-dev-registry.invalid"})
            template = self._rest_client
            template.session.close()
            self.store = RegistryStore(path_of(url))
            self._rest_client = _StoreRestClient(self.store, template)  # type: ignore[assignment]
            self._conf = {**conf, "url": url}

    return DevRegistryClient


_cls: type | None = None


def dev_registry_client(conf: dict[str, Any]) -> Any:
    """A ``SchemaRegistryClient`` over the file ``conf["url"]`` names (``file://PATH``); the
    class is made on first use because core does not depend on confluent-kafka's
    schema-registry extra."""
    global _cls
    if _cls is None:
        _cls = _client_class()
    return _cls(conf)
