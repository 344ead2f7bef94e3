"""The conformance suite every schema backend passes.

Subclass :class:`SchemaBackendConformance` in a test module (its name must start with
``Test`` for pytest to collect it) and override the fixtures that describe your backend::

    class TestMyBackend(SchemaBackendConformance):
        @pytest.fixture
        def backend_name(self) -> str:
            return "my_backend"

        @pytest.fixture
        def valid_payload(self) -> Any:
            return {"id": 1}
        ...

The backend is called exactly as producers and consumers call it (through
:class:`deimos.runtime.Runtime`, once per batch), under settings built from the fixtures and
an empty environment, so the suite does not depend on the process's configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from deimos.config import KeyConfig, Settings, build_settings
from deimos.errors import DecodeError, SchemaValidationError
from deimos.plugins import get_registry
from deimos.runtime import Runtime, SchemaBackend
from deimos.schema.base import SchemaField

#: one key case: (key_config as users write it, key given to the producer, decoded key)
KeyCase = tuple[Any, Any, Any]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k),
                                                                          dict) else v
    return out


class SchemaBackendConformance:
    """Checks round trips, tombstones, keys, validation errors with paths, ``schema_fields``,
    the mock stand-in and batch order for one schema backend."""

    # -- fixtures a backend overrides ---------------------------------------------------------

    @pytest.fixture
    def backend_name(self) -> str:
        """The entry-point name under ``deimos.schema_backends``. Required."""
        raise NotImplementedError("override the backend_name fixture")

    @pytest.fixture
    def schema_dir(self) -> Any:
        """Directory with the schema files (``schema.path``), or ``None``."""
        return None

    @pytest.fixture
    def schema_name(self) -> str | None:
        """The value schema (``Producer.schema``), or ``None`` for schemaless backends."""
        return None

    @pytest.fixture
    def namespace(self) -> str | None:
        return None

    @pytest.fixture
    def extra_settings(self) -> dict[str, Any]:
        """More settings merged over ``{"schema": {"backend": ..., "path": ...}}``."""
        return {}

    @pytest.fixture
    def topic(self) -> str:
        return "conformance-topic"

    @pytest.fixture
    def valid_payload(self) -> Any:
        """A payload the schema accepts. Required."""
        raise NotImplementedError("override the valid_payload fixture")

    @pytest.fixture
    def expected_decoded(self, valid_payload: Any) -> Any:
        """What decoding the encoded ``valid_payload`` gives (default: the payload)."""
        return valid_payload

    @pytest.fixture
    def payload_batch(self, valid_payload: Any) -> list[Any]:
        """Valid payloads (tombstones allowed), to check a batch encodes and decodes in order
        and as each payload alone would; override with distinct payloads for a stricter check."""
        return [valid_payload, None, valid_payload]

    @pytest.fixture
    def invalid_payload(self) -> Any:
        """A payload the schema rejects. Required."""
        raise NotImplementedError("override the invalid_payload fixture")

    @pytest.fixture
    def invalid_paths(self) -> list[str]:
        """Field paths that must all appear in the validation error (``""`` is the root)."""
        return []

    @pytest.fixture
    def key_cases(self) -> list[KeyCase]:
        """Key configs the backend supports, each with a key and its decoded form."""
        return [("plain", "key-1", "key-1")]

    @pytest.fixture
    def expected_field_names(self) -> list[str] | None:
        """The names ``schema_fields`` returns, in order (``None``: not checked)."""
        return None

    @pytest.fixture
    def garbage(self) -> bytes:
        """Bytes the backend cannot decode."""
        return b"\xff\xfe\x00 not a valid message"

    # -- plumbing ------------------------------------------------------------------------------

    @pytest.fixture
    def settings(self, backend_name: str, schema_dir: Any,
                 extra_settings: dict[str, Any]) -> Settings:
        schema: dict[str, Any] = {"backend": backend_name}
        if schema_dir is not None:
            schema["path"] = str(schema_dir)
        data = _merge({"schema": schema}, extra_settings)
        return build_settings(data, environ={}).settings

    @pytest.fixture
    def runtime(self, settings: Settings) -> Runtime:
        return Runtime(settings)

    @pytest.fixture
    def make_backend(self, runtime: Runtime, topic: str, schema_name: str | None,
                     namespace: str | None) -> Callable[..., SchemaBackend]:
        def make(key_config: Any = "none", name: str | None = None) -> SchemaBackend:
            return runtime.schema_backend(
                topic=topic, schema=schema_name, namespace=namespace,
                key_config=KeyConfig.model_validate(key_config), backend=name)
        return make

    @pytest.fixture
    def backend(self, make_backend: Callable[..., SchemaBackend]) -> SchemaBackend:
        return make_backend()

    @staticmethod
    def prepare(backend: SchemaBackend, payload: Any) -> Any:
        """What a producer does before encoding: coerce (when the backend can)."""
        return payload if backend.coerce is None else backend.coerce(backend.context, payload)

    # -- the checks ----------------------------------------------------------------------------

    def test_backend_is_installed(self, backend_name: str) -> None:
        info = get_registry().get("schema_backend", backend_name)
        assert "deimos_schema_encode" in info.hooks and "deimos_schema_decode" in info.hooks

    def test_round_trip(self, backend: SchemaBackend, valid_payload: Any,
                        expected_decoded: Any) -> None:
        payload = self.prepare(backend, valid_payload)
        if backend.validate is not None:
            backend.validate(backend.context, payload)
        encoded = backend.encode(backend.context, [payload])
        assert len(encoded) == 1 and isinstance(encoded[0], bytes)
        assert backend.decode(backend.context, encoded) == [expected_decoded]

    def test_tombstones(self, backend: SchemaBackend, valid_payload: Any,
                        expected_decoded: Any) -> None:
        payload = self.prepare(backend, valid_payload)
        encoded = backend.encode(backend.context, [None, payload, None])
        assert encoded[0] is None and encoded[2] is None and isinstance(encoded[1], bytes)
        assert backend.decode(backend.context, encoded) == [None, expected_decoded, None]
        if backend.validate is not None:
            backend.validate(backend.context, None)

    def test_batch_order(self, backend: SchemaBackend, payload_batch: list[Any]) -> None:
        prepared = [self.prepare(backend, p) for p in payload_batch]
        encoded = backend.encode(backend.context, prepared)
        assert len(encoded) == len(prepared)
        singles = [backend.encode(backend.context, [p])[0] for p in prepared]
        assert encoded == singles
        assert backend.decode(backend.context, encoded) == backend.decode(
            backend.context, singles)

    def test_one_value_encoder_matches_the_list_hook(
            self, backend: SchemaBackend, payload_batch: list[Any]) -> None:
        """``deimos_schema_encoder`` (optional) is publish()'s path: it must give exactly
        the list hook's bytes, tombstones included."""
        if backend.encoder is None:
            pytest.skip("backend does not implement deimos_schema_encoder")
        encode_one = backend.encoder(backend.context, "value")
        if encode_one is None:
            pytest.skip("backend offers no one-value encoder for this context")
        prepared = [self.prepare(backend, p) for p in payload_batch] + [None]
        assert [encode_one(p) for p in prepared] == backend.encode(backend.context, prepared)

    def test_checker_passes_only_what_coerce_returns_unchanged(
            self, backend: SchemaBackend, valid_payload: Any, payload_batch: list[Any],
            invalid_payload: Any) -> None:
        """``deimos_schema_checker`` (optional): a payload it passes is published without
        coercion, so coerce must return that very payload; it never raises."""
        if backend.checker is None or backend.coerce is None:
            pytest.skip("backend does not implement deimos_schema_checker and coerce")
        check = backend.checker(backend.context)
        if check is None:
            pytest.skip("backend offers no checker for this context")
        candidates = [valid_payload, *payload_batch, invalid_payload]
        candidates += [self.prepare(backend, p) for p in [valid_payload, *payload_batch]]
        for p in candidates:
            if type(p) is not dict:
                continue  # deimos checks dicts only
            if check(p):
                assert backend.coerce(backend.context, p) is p, p

    def test_native_types_are_taken_as_they_are(
            self, backend: SchemaBackend, valid_payload: Any, payload_batch: list[Any]) -> None:
        """``deimos_schema_native_types`` (optional): a payload of one of these types is
        published without coercion, so coerce must return that very payload and the
        encoders must give it the bytes of the coerced payloads it stands for."""
        if backend.native_types is None:
            pytest.skip("backend does not implement deimos_schema_native_types")
        native = set(backend.native_types(backend.context) or ())
        if not native:
            pytest.skip("backend offers no native types for this context")
        prepared = [self.prepare(backend, p) for p in [valid_payload, *payload_batch]]
        taken = [p for p in [valid_payload, *payload_batch, *prepared] if type(p) in native]
        assert taken, f"no payload of the fixtures is of the native types {native}"
        for p in taken:
            if backend.coerce is not None:
                assert backend.coerce(backend.context, p) is p, p
        encoded = backend.encode(backend.context, taken)
        assert encoded == [backend.encode(backend.context, [p])[0] for p in taken]
        encode_one = backend.encoder(backend.context, "value") if backend.encoder else None
        if encode_one is not None:
            assert [encode_one(p) for p in taken] == encoded

    def test_keys(self, make_backend: Callable[..., SchemaBackend],
                  key_cases: list[KeyCase]) -> None:
        for key_config, key, decoded in key_cases:
            b = make_backend(key_config)
            assert b.encode_key is not None and b.decode_key is not None
            encoded = b.encode_key(b.context, [key, key])
            assert all(isinstance(e, bytes) for e in encoded), key_config
            one = b.encoder(b.context, "key") if b.encoder is not None else None
            if one is not None:  # publish()'s key encoder gives the list hook's bytes
                assert one(key) == encoded[0], key_config
            assert b.decode_key(b.context, encoded) == [decoded, decoded], key_config

    def test_validate_accepts_valid(self, backend: SchemaBackend, valid_payload: Any) -> None:
        if backend.validate is None:
            pytest.skip("backend does not implement validate")
        backend.validate(backend.context, self.prepare(backend, valid_payload))

    def test_validate_reports_paths(self, backend: SchemaBackend, invalid_payload: Any,
                                    invalid_paths: list[str]) -> None:
        if backend.validate is None:
            pytest.skip("backend does not implement validate")
        with pytest.raises(SchemaValidationError) as info:
            backend.validate(backend.context, invalid_payload)
        paths = [p for p, _ in info.value.errors]
        assert info.value.errors, "SchemaValidationError without errors"
        for path in invalid_paths:
            assert path in paths, f"{path!r} not reported; got {info.value.errors}"

    def test_encode_rejects_invalid(self, backend: SchemaBackend, invalid_payload: Any,
                                    invalid_paths: list[str]) -> None:
        # What a producer does: coerce, then encode. Either step may refuse the payload.
        with pytest.raises(SchemaValidationError) as info:
            backend.encode(backend.context, [self.prepare(backend, invalid_payload)])
        paths = [p for p, _ in info.value.errors]
        for path in invalid_paths:
            assert path in paths, f"{path!r} not reported; got {info.value.errors}"

    def test_decode_garbage_raises_decode_error(self, backend: SchemaBackend,
                                                garbage: bytes) -> None:
        with pytest.raises(DecodeError):
            backend.decode(backend.context, [garbage])

    def test_schema_fields(self, backend: SchemaBackend,
                           expected_field_names: list[str] | None) -> None:
        if backend.fields is None:
            pytest.skip("backend does not implement schema_fields")
        fields = backend.fields(backend.context)
        assert isinstance(fields, list)
        for f in fields:
            assert isinstance(f, SchemaField)
            assert isinstance(f.name, str) and f.name and isinstance(f.type, str) and f.type
            assert isinstance(f.nullable, bool) and isinstance(f.has_default, bool)
            assert f.enum_symbols is None or all(isinstance(s, str) for s in f.enum_symbols)
        assert len({f.name for f in fields}) == len(fields)
        if expected_field_names is not None:
            assert [f.name for f in fields] == expected_field_names

    def test_mock_names_an_installed_backend(
        self, backend: SchemaBackend, make_backend: Callable[..., SchemaBackend],
        valid_payload: Any, expected_decoded: Any,
    ) -> None:
        if backend.mock is None:
            pytest.skip("backend does not implement mock (the test helpers use 'mock')")
        name = backend.mock(backend.context)
        assert name in get_registry().names("schema_backend")
        stand_in = make_backend(name=name)  # the stand-in handles the same payloads
        payload = self.prepare(stand_in, valid_payload)
        encoded = stand_in.encode(stand_in.context, [payload])
        assert stand_in.decode(stand_in.context, encoded) == [expected_decoded]
