"""Read-only access to a store, for viewers (the dashboard): a connection that cannot write, and a status check.

- SQLite: the file is opened through a `file:...?mode=ro` URI (SQLite itself refuses every write)
  and `PRAGMA query_only` is set on each connection; the file is never created and no journal-mode
  change is attempted. A short busy timeout keeps a viewer from hanging on a locked database.
- PostgreSQL: every session starts with `default_transaction_read_only = on` (a libpq option), so
  every transaction is READ ONLY and the server refuses INSERT/UPDATE/DELETE/DDL.

`open_readonly(url)` returns a `ReadOnlyStore` (a `Store` whose `reader` is that engine and whose
`write` refuses), usable with every function of `cascade.store.queries`. `check(store)` says whether
the store can be shown: missing, empty, older or newer schema, locked or unreachable, each with a
message for the page (password masked), never an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from cascade.errors import CascadeError
from cascade.store import db, migrate
from cascade.store.writer import Store

READ_BUSY_TIMEOUT_MS = 2_000  # a viewer waits this long on a locked SQLite file, then says so


class ReadOnlyStore(Store):
    """A store opened for reading only: `reader` is the read-only engine, `write` refuses."""

    def __init__(self, engine: Engine, url: str):
        super().__init__(engine)
        self.url = db.mask_url(url)  # the URL the user gave (not the internal read-only URI), password masked
        self.source_url = url  # unmasked: for handing to a child process (never print it)

    @property
    def reader(self) -> Engine:
        return self.engine

    def write(self, fn: Callable[[Connection], Any]) -> Any:
        raise CascadeError(f"store {self.url} is open read-only")

    def close(self) -> None:
        self.engine.dispose()


def sqlite_readonly_url(url: URL) -> URL:
    """`sqlite:///file:<abs path>?mode=ro&uri=true` for a SQLite file URL."""
    path = db.sqlite_path(url)
    if path is None:
        raise CascadeError(f"store {db.mask_url(url)} is an in-memory SQLite database: nothing to show")
    uri_path = quote(str(path.resolve()), safe="/")
    return url.set(database=f"file:{uri_path}", query={"mode": "ro", "uri": "true"})


def readonly_engine(url: str | URL) -> Engine:
    """An Engine on `url` that cannot write (see the module docstring); CascadeError for a bad URL,
    a missing driver or a missing SQLite file."""
    parsed = db.parse_url(url)
    if db.is_sqlite(parsed):
        db.check_sqlite_file(parsed, create=False)
        engine = create_engine(sqlite_readonly_url(parsed))

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {READ_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA query_only = ON")
            cur.close()

        return engine
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {
            "options": "-c default_transaction_read_only=on",
            "connect_timeout": db.PG_CONNECT_TIMEOUT_S,
        }
    try:
        return create_engine(parsed, pool_pre_ping=True, **kwargs)
    except (ImportError, SQLAlchemyError) as exc:
        raise CascadeError(f"store URL {db.mask_url(parsed)!r}: cannot use it ({exc})") from None


def open_readonly(url: str) -> ReadOnlyStore:
    """A `ReadOnlyStore` on `url` (no connection is made yet: `check` makes the first)."""
    return ReadOnlyStore(readonly_engine(url), url)


@dataclass(frozen=True)
class StoreStatus:
    """Whether a store can be shown. `state`: ok | empty | older | newer | foreign | locked | unreachable."""

    state: str
    message: str
    revision: str | None = None
    head: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def check(store: Store) -> StoreStatus:
    """Connect once and read the schema revision; every failure becomes a StoreStatus with a message."""
    head = migrate.head()
    url = store.url
    try:
        with store.reader.connect() as conn:
            rev = migrate.revision_of(conn)
            has_runs = inspect(conn).has_table("runs")
            if rev is not None:
                conn.execute(text("SELECT 1 FROM runs LIMIT 1")).first()  # a locked file fails here
    except SQLAlchemyError as exc:
        reason = db.short_reason(exc, store.engine.url)
        if db.is_locked(exc):
            return StoreStatus(
                "locked", f"store {url} is locked by a writer ({reason}); reload in a moment", None, head
            )
        return StoreStatus("unreachable", f"cannot read store {url}: {reason}", None, head)
    if rev is None:
        if has_runs:
            return StoreStatus(
                "foreign",
                f"store {url} has a `runs` table but no cascade schema revision: it is not a cascade store",
                None,
                head,
            )
        return StoreStatus(
            "empty",
            f"store {url} is empty: nothing has been logged there yet (`cascade run POLICY --prompt ...` logs a run)",
            None,
            head,
        )
    known = {h["revision"] for h in migrate.history()}
    if rev not in known:
        return StoreStatus(
            "newer",
            f"store {url} has schema revision {rev!r}, newer than this cascade knows ({head!r}): upgrade cascade",
            rev,
            head,
        )
    if rev != head:
        return StoreStatus(
            "older",
            f"store {url} is at schema revision {rev!r}, this dashboard needs {head!r}: "
            f"run `cascade db upgrade --store {url}` (back it up first if it matters)",
            rev,
            head,
        )
    return StoreStatus("ok", f"store {url} (schema {rev})", rev, head)
