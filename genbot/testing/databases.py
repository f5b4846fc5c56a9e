"""Scratch PostgreSQL databases for tests and benches: one uniquely named database per run."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator


@contextlib.contextmanager
def fresh_postgres_database(server_url: str, prefix: str = "genbot_test") -> Iterator[str]:
    """Create a uniquely named database on the server, yield its URL (same driver), then drop it."""
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    url = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    # A synchronous driver with AUTOCOMMIT: CREATE/DROP DATABASE cannot run in a transaction.
    admin = create_engine(url.set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
