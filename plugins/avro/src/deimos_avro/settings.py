"""The ``avro`` settings section (``[avro]`` in deimos.toml, ``DEIMOS_AVRO__*`` in the env).

Registry URL and credentials stay in core's ``schema`` section (``schema.registry_url``,
``schema.user``, ``schema.password``) because every registry-backed plugin shares them; the
serializer options (subject name strategy, ``auto_register_schemas``, ``use_latest_version``,
``normalize_schemas``, ``use_schema_id``, ``registry_config``) are core's
:class:`~deimos.schema.serde.RegistrySerdeSettings`, the same in every registry plugin.
"""

from __future__ import annotations

from deimos.schema.serde import RegistrySerdeSettings, SubjectStrategy

__all__ = ["AvroSettings", "SubjectStrategy"]


class AvroSettings(RegistrySerdeSettings):
    """Options of the ``avro_*`` schema backends."""
