"""Importing this module imports confluent-kafka's schema registry client with authlib's
import-time deprecation warnings silenced (:func:`deimos.schema.registry.quiet_authlib`).

Registry-backed plugins import it before anything else of theirs, so that their own
``from confluent_kafka.schema_registry import ...`` finds the module already imported.
"""

from deimos.schema.registry import import_client_module

import_client_module()
