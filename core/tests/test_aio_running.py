"""deimos.aio.running() without a broker: what it says when it has nothing to run."""

from __future__ import annotations

import asyncio
import logging

import pytest

import deimos
import deimos.aio


def test_running_with_no_consumers_configured_warns_and_names_the_settings_file(
        caplog: pytest.LogCaptureFixture, deimos_reset: None) -> None:
    deimos.configure(producers={"backend": "test"})

    async def app() -> list[object]:
        async with deimos.aio.running() as executor:
            return list(executor.current())

    with caplog.at_level(logging.WARNING, logger="deimos.runner"):
        assert asyncio.run(app()) == []
    assert "no consumers are configured, nothing is consumed" in caplog.text
    assert "./deimos.toml is read when it exists" in caplog.text


def test_running_an_explicitly_empty_list_is_quiet(
        caplog: pytest.LogCaptureFixture, deimos_reset: None) -> None:
    deimos.configure(producers={"backend": "test"})

    async def app() -> None:
        async with deimos.aio.running([]):
            pass

    with caplog.at_level(logging.WARNING, logger="deimos.runner"):
        asyncio.run(app())
    assert "no consumers are configured" not in caplog.text
