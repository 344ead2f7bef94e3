"""The application hook of a service (``app = "service_app:setup"`` in deimos.toml).

deimos imports this module and calls ``setup()`` once in every CLI process (``deimos run``,
``deimos db-producer``, ``deimos db-poller``) before any consumer, worker or poller starts;
the process's current directory is on ``sys.path``, so the project's modules import.
"""

from __future__ import annotations

import logging
import os


def setup() -> None:
    # whatever the service's own entry points do first: logging, the OpenTelemetry SDK,
    # secrets, feature flags ...
    logging.getLogger("orders").setLevel(os.environ.get("ORDERS_LOG_LEVEL", "INFO"))
    logging.getLogger("orders").info("orders service set up in process %d", os.getpid())
