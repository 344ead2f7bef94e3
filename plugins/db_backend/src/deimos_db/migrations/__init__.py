"""deimos-db's Alembic migrations.

Add :data:`VERSIONS` to ``version_locations`` in your ``alembic.ini`` (keep your own
directory too) and upgrade the branch: ``alembic upgrade deimos_db@head`` (or ``heads``).
This directory is also a complete Alembic environment of its own (:data:`SCRIPT_LOCATION`)
for services that do not use Alembic themselves.
"""

from __future__ import annotations

from pathlib import Path

SCRIPT_LOCATION = str(Path(__file__).parent)
VERSIONS = str(Path(__file__).parent / "versions")
BRANCH = "deimos_db"


def alembic_config(url: str) -> object:
    """An ``alembic.config.Config`` running these migrations alone against ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
