"""Decoding a polled batch with the consumer's schema backend.

One backend call per batch; per message only when the batch call failed, to find the
culprits. A message that cannot be decoded is the message's fault and follows the error
policy; a :class:`~deimos.errors.TransientError` (the schema registry unreachable, say) is not,
and is raised for the whole batch to wait for the service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deimos.config import ConsumerSettings, KeyConfig
from deimos.consumer.api import _Base, _key, _value
from deimos.errors import DecodeError, TransientError
from deimos.runtime import Runtime, SchemaBackend


class Decoder:
    """Payloads and keys of one consumer's messages, schema backends resolved per topic."""

    def __init__(self, handler: _Base, settings: ConsumerSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self._schemas: dict[str, SchemaBackend] = {}
        kc = settings.key_config
        self.key_config = kc if kc is not None else KeyConfig(kind="none")
        #: the schema class's ``from_dict`` when ``use_schema_classes`` is on, else None
        self.from_dict: Callable[[Any], Any] | None = None
        use = settings.use_schema_classes
        if use or (use is None and runtime.settings.schema.use_schema_classes):
            from deimos.schema_classes import from_dict_for

            self.from_dict = from_dict_for(handler, settings.schema_name, settings.namespace,
                                           runtime.settings.schema.generated_class_path)

    def schema_for(self, topic: str) -> SchemaBackend:
        sb = self._schemas.get(topic)
        if sb is None:
            sb = self._schemas[topic] = self.runtime.schema_backend(
                topic=topic, schema=self.settings.schema_name,
                namespace=self.settings.namespace, key_config=self.key_config,
                own=self.settings, where=f"consumer {self.settings.name}")
        return sb

    def decode(self, topic: str, msgs: list[Any]
               ) -> tuple[list[Any], list[Any] | None, dict[int, BaseException]]:
        """Payloads, decoded keys (``None``: raw keys, read lazily) and the index -> error of
        every message that failed to decode. One backend call per batch; per message only
        when the batch call failed, to find the culprits. A :class:`TransientError` is
        raised, not recorded: the whole batch waits for the service it needs."""
        sb = self.schema_for(topic)
        ctx = sb.context
        values = list(map(_value, msgs))
        errors: dict[int, BaseException] = {}
        try:
            payloads = sb.decode(ctx, values)
        except TransientError:
            raise
        except Exception:
            payloads = []
            for i, v in enumerate(values):
                try:
                    payloads.append(sb.decode(ctx, [v])[0])
                except TransientError:
                    raise
                except Exception as exc:
                    errors[i] = exc if isinstance(exc, DecodeError) else DecodeError(
                        f"cannot decode the value at offset {msgs[i].offset()} on "
                        f"{topic!r}: {type(exc).__name__}: {exc}")
                    payloads.append(None)
        if self.from_dict is not None:
            self._to_classes(topic, msgs, payloads, errors)
        if self.key_config.kind == "none" or sb.decode_key is None:
            return payloads, None, errors
        raw_keys = list(map(_key, msgs))
        try:
            dkeys = sb.decode_key(ctx, raw_keys)
        except TransientError:
            raise
        except Exception:
            dkeys = []
            for i, k in enumerate(raw_keys):
                try:
                    dkeys.append(sb.decode_key(ctx, [k])[0])
                except TransientError:
                    raise
                except Exception as exc:
                    errors.setdefault(i, DecodeError(
                        f"cannot decode the key at offset {msgs[i].offset()} on {topic!r}: "
                        f"{exc}"))
                    dkeys.append(None)
        return payloads, dkeys, errors

    def _to_classes(self, topic: str, msgs: list[Any], payloads: list[Any],
                    errors: dict[int, BaseException]) -> None:
        """Decoded dicts to schema class instances; one that does not fit its class is a
        decode error (stale generated classes), handled like any undecodable message."""
        fd = self.from_dict
        assert fd is not None
        for i, p in enumerate(payloads):
            if p is not None and i not in errors:
                try:
                    payloads[i] = fd(p)
                except Exception as exc:
                    errors[i] = DecodeError(
                        f"the value at offset {msgs[i].offset()} on {topic!r} does not fit "
                        f"its schema class: {type(exc).__name__}: {exc}")
