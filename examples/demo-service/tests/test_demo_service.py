"""``deimos demo`` (the README's first command) end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _demo(env_extra: dict[str, str], messages: int = 2000) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    if os.environ.get("DEIMOS_TEST_BOOTSTRAP_SERVERS"):
        env["DEIMOS_KAFKA__BOOTSTRAP_SERVERS"] = os.environ["DEIMOS_TEST_BOOTSTRAP_SERVERS"]
    return subprocess.run([sys.executable, "-m", "deimos", "demo", "--messages", str(messages),
                           "--log-level", "error"],
                          env=env, capture_output=True, text=True, timeout=300)


def _check(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 0, out.stdout + out.stderr
    assert "read model matches source: yes" in out.stdout
    assert "5 dead-lettered (expected 5)" in out.stdout
    assert "final consumer lag (committed vs high watermark): 0" in out.stdout
    # one message per change, as the title counts them
    assert "write widgets → outbox                     │    2,000 │" in out.stdout
    assert "Kafka → read model                         │    2,000 │" in out.stdout


def test_the_workload_changes_no_widget_twice_in_one_transaction() -> None:
    # two changes of a widget in one transaction are one outbox message (the later state),
    # which made the summary count 99,999 messages for "100,000 widget changes"
    from deimos_demo.run import TRANSACTION_SIZE, Plan

    plan = Plan(100_000)
    assert plan.changes == 100_000
    for start in range(0, plan.changes, TRANSACTION_SIZE):
        ids = [wid for _, wid in plan.ops[start:start + TRANSACTION_SIZE]]
        assert len(ids) == len(set(ids)), start


def test_demo_on_embedded_defaults_builds_a_read_model_equal_to_the_source(tmp_path):
    registry = tmp_path / "dev-registry.json"  # where the default would be, out of $HOME
    out = _demo({"DEIMOS_DEV_REGISTRY": str(registry)})
    _check(out)
    assert "using SQLite" in out.stdout
    # the schemas went to the development registry, where `deimos tail` finds them
    subjects = json.loads(registry.read_text())["subjects"]
    assert any(s.endswith("demo.widgets-value") for s in subjects), subjects


@pytest.mark.parametrize("deimos_database", ["postgresql"], indirect=True)
def test_demo_runs_on_postgresql_with_one_setting(deimos_database):
    out = _demo({"DEIMOS_DB__URL": deimos_database})
    _check(out)
    assert "postgresql" in out.stdout
