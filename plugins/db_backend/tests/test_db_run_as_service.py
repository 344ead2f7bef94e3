"""``deimos db-producer`` and ``deimos db-poller`` as services, through real processes:
health endpoints (ready once the broker and the database answer) and the application hook
called once in each, from a project folder whose modules import (the current directory on
``sys.path``) and whose ./deimos.toml is read without ``--config``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from deimos_db import create_tables, dispose_engines, get_engine
from deimos_db_helpers import ALL_DATABASES, wait_for

pytestmark = [pytest.mark.kafka]

DEIMOS = str(Path(sys.executable).with_name("deimos"))

#: the project's own module: the app hook and a record producer for the poller
APP = '''
import datetime as _dt
import os

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from deimos_db import RecordProducer


def setup():
    with open(os.environ["SETUP_FILE"], "a") as fh:
        fh.write(f"{os.getpid()}\\n")


class Base(DeclarativeBase):
    pass


class Widget(Base):
    __tablename__ = "svc_widgets"
    id: Mapped[int] = mapped_column(primary_key=True)
    updated_at: Mapped[_dt.datetime] = mapped_column(sa.DateTime)


class WidgetProducer(RecordProducer):
    topic = "svc-widgets"
    key_config = "plain"
    model = Widget
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int | None, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError as exc:
        return None, str(exc)


def _project(tmp_path: Path, url: str, bootstrap: str) -> None:
    (tmp_path / "svc_app.py").write_text(APP)
    (tmp_path / "deimos.toml").write_text(textwrap.dedent(f"""
        app = "svc_app:setup"
        [kafka]
        bootstrap_servers = "{bootstrap}"
        [db]
        url = "{url}"
        [db.producer]
        poll_interval = 0.1
        [[db.pollers]]
        producer_class = "svc_app:WidgetProducer"
        run_every = 60
    """))


def _serve(tmp_path: Path, *command: str) -> tuple[dict[str, Any], list[str]]:
    """Run ``deimos COMMAND --health-port P`` from ``tmp_path`` until ready; the last
    /readyz body and the app hook's calls."""
    port = _free_port()
    setup = tmp_path / f"setup-{command[0]}.txt"
    env = {k: v for k, v in os.environ.items() if k != "DEIMOS_CONFIG"}
    env["SETUP_FILE"] = str(setup)
    proc = subprocess.Popen([DEIMOS, *command, "--health-port", str(port)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _get(port, "/readyz")[0] == 200 or proc.poll() is not None,
                 timeout=60, what=f"{command[0]} ready")
        status, body = _get(port, "/readyz")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert status == 200, output
    assert proc.returncode == 0, output
    return body, setup.read_text().split()


@ALL_DATABASES
def test_db_producer_and_poller_serve_health_and_run_the_app_hook_once(
        deimos_database: str, deimos_kafka: str, tmp_path: Path) -> None:
    engine = get_engine(deimos_database)
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS svc_widgets"))
        conn.execute(sa.text("CREATE TABLE svc_widgets (id INTEGER PRIMARY KEY, "
                             "updated_at TIMESTAMP NULL)"))
    dispose_engines()
    _project(tmp_path, deimos_database, deimos_kafka)

    body, calls = _serve(tmp_path, "db-producer")
    assert len(calls) == 1, "the app hook ran once in the db-producer process"
    workers = [r for r in body["runnables"] if r.get("kind") == "db_producer"]
    assert workers and all(w["state"] == "idle, connected" for w in workers), body

    body, calls = _serve(tmp_path, "db-poller")
    assert len(calls) == 1, "the app hook ran once in the db-poller process"
    (poller,) = body["runnables"]
    assert poller["kind"] == "db_poller" and poller["polls"] >= 1, body
