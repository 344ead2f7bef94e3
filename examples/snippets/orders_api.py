"""The FastAPI example of docs/asyncio.md (run by the test suite).

    DEIMOS_KAFKA__BOOTSTRAP_SERVERS=localhost:9092 uvicorn orders_api:app

The web app publishes from its request handlers with ``apublish`` and runs an asyncio
consumer on its own event loop, started and stopped by the app's lifespan.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

import deimos
import deimos.aio


class OrderPlaced(deimos.Producer):
    topic = "orders"
    key_config = "plain"


class OrderAudit(deimos.AsyncConsumer):
    topic = "orders"
    group_id = "order-audit"
    key_config = "plain"
    max_concurrency = 50          # 50 orders awaited at once; one order id at a time

    seen: list[tuple[str, str]] = []

    async def consume(self, payload: Any, metadata: deimos.Metadata) -> None:
        await asyncio.sleep(0.01)   # an HTTP call, an async database write ...
        self.seen.append((metadata.key, payload))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # the consumers of [[consumers]] poll in threads of their own; their async handlers
    # run here, on the app's event loop, until the app shuts down
    async with deimos.aio.running():
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/orders/{order_id}")
async def place_order(order_id: str, item: str) -> dict[str, str]:
    # returns once the broker acknowledged the message; the event loop serves other
    # requests meanwhile, and a delivery failure raises here (a 500 for this request)
    await OrderPlaced.apublish(item, key=order_id, sync=True)
    return {"order": order_id, "status": "placed"}


@app.get("/audit")
async def audit() -> dict[str, list[tuple[str, str]]]:
    return {"seen": OrderAudit.seen}
