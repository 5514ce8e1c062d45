"""Schema migrations (Alembic), configured from the package so they work once installed.

The Alembic environment (env.py, script.py.mako, versions/) lives in the repository's
top-level `migrations/` folder, which pyproject.toml maps into the wheel as the package
`cascade.store.migrations`; `MIGRATIONS_DIR` finds it there, installed or editable. Every
operation here runs inside one transaction on a connection we own (SQLite: BEGIN
IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock), so processes that open the
same fresh database at once create the schema exactly once.

- an empty database is brought to head (`ensure_schema`, used by `Store.open`);
- a database at an older revision is refused with the command that upgrades it;
- a database at a revision this code does not know (a newer cascade wrote it) is refused.

`alembic_version` is renamed `cascade_alembic_version` so the store can share a
PostgreSQL database with an application that has its own Alembic history.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect, text

from cascade.errors import CascadeError
from cascade.store import db
from cascade.store.models import Base


def _migrations_dir() -> Path:
    """The Alembic scripts: the package `cascade.store.migrations` (a wheel, an editable install),
    else the checkout's `migrations/` folder (cascade imported from a checkout it was not installed
    from, or a stale `cascade/store/migrations/__pycache__` shadowing the mapped package)."""
    candidates: list[Path] = []
    try:
        candidates.append(Path(str(resources.files("cascade.store.migrations"))))
    except ModuleNotFoundError:
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "migrations")
    return next((c for c in candidates if (c / "env.py").is_file()), candidates[0])


MIGRATIONS_DIR = _migrations_dir()
VERSION_TABLE = "cascade_alembic_version"
PG_LOCK_KEY = 0x63617363  # "casc": pg_advisory_xact_lock key serialising schema changes
CONTEXT_OPTS: dict[str, Any] = {
    "version_table": VERSION_TABLE,
    "render_as_batch": True,  # SQLite cannot ALTER most things: autogenerate batch operations
    "compare_type": True,
    "compare_server_default": True,
}


def config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic Config for our migrations; env.py uses `connection` (preferred) or `url`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    heads = script().get_heads()
    if len(heads) != 1:  # a packaging or merge mistake, not a user error (and no bare assert: -O drops it)
        raise RuntimeError(f"the migrations in {MIGRATIONS_DIR} have {len(heads)} heads, expected one: {heads}")
    return heads[0]


def history() -> list[dict[str, Any]]:
    """Every revision, newest first: revision, down_revision, message, is_head."""
    return [
        {"revision": s.revision, "down_revision": s.down_revision, "message": s.doc, "is_head": s.is_head}
        for s in script().walk_revisions()
    ]


def revision_of(conn: Connection) -> str | None:
    """The revision the database is at; None when it has no cascade schema."""
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})


def _known(rev: str) -> bool:
    try:
        return script().get_revision(rev) is not None
    except CommandError:
        return False


def _refuse_unknown(conn: Connection, rev: str | None) -> None:
    if rev is not None and not _known(rev):
        raise CascadeError(
            f"store {db.mask_url(conn.engine.url)} has schema revision {rev!r}, which this version of cascade "
            f"does not know (it knows up to {head()!r}): a newer cascade wrote it. Upgrade cascade, "
            "or point --store at another database"
        )


def _upgrade(conn: Connection, revision: str) -> None:
    _lock(conn)
    _refuse_unknown(conn, revision_of(conn))
    if revision_of(conn) is None and inspect(conn).has_table("runs"):
        raise CascadeError(
            f"store {db.mask_url(conn.engine.url)} has a `runs` table but no cascade schema "
            "revision: it is not a cascade store; use another database"
        )
    command.upgrade(config(conn), revision)


def ensure_schema(engine: Engine, reader: Engine | None = None) -> None:
    """Create the schema at head in an empty database; refuse an older or a newer one.

    `engine` writes (SQLite: BEGIN IMMEDIATE); `reader`, when given, checks first without the write lock.
    """

    def go(conn: Connection) -> None:
        _lock(conn)
        rev = revision_of(conn)
        if rev is None:
            _upgrade(conn, "head")
            return
        _refuse_unknown(conn, rev)
        if rev != head():
            url = db.mask_url(engine.url)
            raise CascadeError(
                f"store {url} is at schema revision {rev!r}, this cascade needs {head()!r}: "
                f"run `cascade db upgrade --store {url}` (back it up first if it matters)"
            )

    if reader is not None:
        with reader.connect() as conn:  # the usual case, already at head: one read, no lock
            if revision_of(conn) == head():
                return
    db.write(engine, go)  # under the write lock (SQLite) or advisory lock (PostgreSQL): check again, act


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the database at `url` to `revision`; returns (revision before, revision after)."""
    db.check_sqlite_file(db.parse_url(url), create=True)
    engine = db.make_engine(url)
    try:
        db.check_connection(engine)

        def go(conn: Connection) -> tuple[str | None, str | None]:
            before = revision_of(conn)
            try:
                _upgrade(conn, revision)
            except CommandError as exc:
                raise CascadeError(
                    f"cannot upgrade store {db.mask_url(url)} to {revision!r}: {db.mask_passwords(str(exc))}"
                ) from None
            return before, revision_of(conn)

        return db.write(engine, go)
    finally:
        engine.dispose()


def current(url: str) -> str | None:
    """The revision of the database at `url` (None: no cascade schema yet)."""
    db.check_sqlite_file(db.parse_url(url), create=False)
    engine = db.make_engine(url, immediate=False)
    try:
        db.check_connection(engine)
        with engine.connect() as conn:
            return revision_of(conn)
    finally:
        engine.dispose()


def drift(conn: Connection) -> list[Any]:
    """What autogenerate would change to make the database match the models ([] = no drift)."""
    ctx = MigrationContext.configure(conn, opts={**CONTEXT_OPTS, "target_metadata": Base.metadata})
    return compare_metadata(ctx, Base.metadata)
