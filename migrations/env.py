"""Alembic environment for the decision store.

`cascade.store.migrate` passes an open connection (inside its own transaction) through
`config.attributes["connection"]`; the plain `alembic` command line (alembic.ini at the
repository root) gives a URL instead: `sqlalchemy.url`, else `cascade.store.resolve_url()`.
"""

from __future__ import annotations

from alembic import context

from cascade.store import db
from cascade.store.migrate import CONTEXT_OPTS
from cascade.store.models import Base
from cascade.store.urls import resolve_url

config = context.config


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, **CONTEXT_OPTS)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    url = config.get_main_option("sqlalchemy.url") or resolve_url()
    assert url is not None  # resolve_url() without --no-store or a policy always names a store
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, **CONTEXT_OPTS)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            run(conn)
            conn.commit()
    finally:
        engine.dispose()


main()
