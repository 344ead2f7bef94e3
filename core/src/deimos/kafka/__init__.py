"""The one place that talks to librdkafka: client configurations and the shared producers.

* :mod:`deimos.kafka.config` builds every librdkafka configuration deimos uses (producers,
  consumers, admin and read-only clients) from the settings, with one bootstrap default;
* :mod:`deimos.kafka.producers` owns the producers shared by every class and thread of a
  process: fatal-error replacement, partition counts, the produce loop that waits out a full
  local queue, and the synchronous delivery wait.

The ``kafka``/``kafka_async`` producer backends, dead letters, the DB producer, ``deimos
tail``, ``deimos lag`` and the consumers all build on these.
"""

from deimos.kafka.config import (
    DEFAULT_BOOTSTRAP,
    LIBRDKAFKA_LOGGER,
    admin_config,
    client_config,
    consumer_config,
    producer_config,
    reader_config,
)
from deimos.kafka.producers import (
    SharedProducer,
    close_all,
    deliver,
    flush_all,
    shared_producer,
)

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "LIBRDKAFKA_LOGGER",
    "SharedProducer",
    "admin_config",
    "client_config",
    "close_all",
    "consumer_config",
    "deliver",
    "flush_all",
    "producer_config",
    "reader_config",
    "shared_producer",
]
