"""The getting-started service: a producer and a consumer (docs/getting-started.md).

    deimos run          # from this folder, with its deimos.toml
"""

from __future__ import annotations

from typing import Any

import deimos


class GreetingProducer(deimos.Producer):
    topic = "greetings"
    key_config = "plain"


class GreetingConsumer(deimos.Consumer):
    topic = "greetings"
    group_id = "greeter"
    key_config = "plain"

    def consume(self, payload: Any, metadata: deimos.Metadata) -> None:
        # the offset is committed after this returns; an exception retries the message
        print(f"{metadata.key}: {payload}", flush=True)
