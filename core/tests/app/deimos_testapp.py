"""A consumer used by the process-level tests (``deimos run`` in a subprocess).

It appends every payload to the file in ``$TESTAPP_OUT`` and fsyncs before returning, so the
file is a witness of what was handled before offsets were stored.
"""

from __future__ import annotations

import os
import time
from typing import Any

from deimos.consumer import BatchConsumer


class RecordingConsumer(BatchConsumer):
    def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
        time.sleep(float(os.environ.get("TESTAPP_SLEEP", "0")))
        with open(os.environ["TESTAPP_OUT"], "a") as fh:
            fh.write("".join(f"{p}\n" for p in payloads))
            fh.flush()
            os.fsync(fh.fileno())
