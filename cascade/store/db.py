"""Connections: URL handling (password masked in every message), SQLite set-up, retries.

SQLite runs in WAL mode (readers never block the writer) with a busy timeout, and every
write transaction starts with `BEGIN IMMEDIATE`: it takes the write lock up front, so a
second writer waits in SQLite's busy handler instead of failing half-way through with
"database is locked". `write()` retries the rare lock error that still gets through.
PostgreSQL (`postgresql+psycopg://...`) needs none of this.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from cascade.errors import CascadeError

BUSY_TIMEOUT_MS = 30_000  # how long a SQLite writer waits for the lock before "database is locked"
RETRY_SECONDS = 120.0  # how long `write()` keeps retrying a locked SQLite database
PG_CONNECT_TIMEOUT_S = 10

T = TypeVar("T")


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ***, for messages and logs (also for unparsable URLs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))  # only the user:PASSWORD@ field


def parse_url(url: str | URL) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise CascadeError(
            f"store URL {mask_url(url)!r} is not a database URL ({exc}); "
            "use e.g. sqlite:///cascade.db or postgresql+psycopg://user:pass@host/db"
        ) from None


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database."""
    db = url.database
    if not db or db == ":memory:" or (db.startswith("file:") and "mode=memory" in db):
        return None
    return Path(db)


def check_sqlite_file(url: URL, *, create: bool) -> None:
    """For a SQLite file URL: its folder must exist, and the file too unless `create`."""
    path = sqlite_path(url) if is_sqlite(url) else None
    if path is None:
        return
    if not path.exists() and not create:
        raise CascadeError(
            f"no store at {path.resolve()} (nothing logged there yet); run something first or pass --store URL"
        )
    if not path.parent.is_dir():
        raise CascadeError(f"cannot open store {mask_url(url)}: folder {path.parent} does not exist")


def make_engine(url: str | URL, *, immediate: bool = True) -> Engine:
    """An Engine for `url`; raises CascadeError for a bad URL or a missing driver.

    `immediate` (SQLite): begin every transaction with BEGIN IMMEDIATE (writers); read-only
    users pass False and never take the write lock.
    """
    parsed = parse_url(url)
    kwargs: dict = {}
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("psycopg", "psycopg2"):
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(parsed, pool_pre_ping=not is_sqlite(parsed), **kwargs)
    except NoSuchModuleError as exc:
        raise CascadeError(
            f"store URL {mask_url(parsed)!r}: no SQLAlchemy dialect or driver for it ({exc}); "
            "for PostgreSQL use postgresql+psycopg://... and pip install 'psycopg[binary]'"
        ) from None
    except ImportError as exc:
        raise CascadeError(f"store URL {mask_url(parsed)!r}: its database driver is not installed ({exc})") from None
    except ArgumentError as exc:
        raise CascadeError(f"store URL {mask_url(parsed)!r}: {exc}") from None
    if is_sqlite(parsed):
        _sqlite_events(engine, immediate)
    return engine


def _sqlite_events(engine: Engine, immediate: bool) -> None:
    memory = sqlite_path(engine.url) is None

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # pysqlite: no implicit BEGIN; SQLAlchemy emits ours below
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not memory:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a killed process loses no commit
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def check_connection(engine: Engine) -> None:
    """Connect once (before any decoding starts); CascadeError with the masked URL when it fails."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise CascadeError(f"cannot open store {mask_url(engine.url)}: {short_reason(exc, engine.url)}") from None


# a URL's password field inside free text: scheme://user:PASSWORD@ (the user part may be empty)
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][\w+.-]*://[^\s:/@]*:)[^\s@]*@")
# a libpq conninfo password: password=VALUE or password='VALUE'
_CONNINFO_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)", re.IGNORECASE)


def mask_passwords(text: str) -> str:
    """`text` with the password field of every URL (`scheme://user:***@`) and conninfo (`password=***`) masked.

    Only those fields: the rest of the message is never touched (a password `p` leaves `port` alone).
    """
    return _CONNINFO_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def short_reason(exc: BaseException, url: URL | None = None) -> str:
    """The driver's message, first line, without SQLAlchemy's background link, with passwords masked.

    `url` is accepted for callers that have one; masking goes by the URL and conninfo fields in
    the message (`mask_passwords`), never by searching for the password's text.
    """
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).strip().splitlines() if ln.strip()]
    reason = lines[0] if lines else type(orig).__name__
    return mask_passwords(reason)


def is_locked(exc: BaseException) -> bool:
    msg = str(getattr(exc, "orig", exc)).lower()
    return isinstance(exc, OperationalError) and ("database is locked" in msg or "database is busy" in msg)


def write(engine: Engine, fn: Callable[[Connection], T], *, retry_seconds: float = RETRY_SECONDS) -> T:
    """Run `fn(conn)` in one transaction and commit; retry the whole transaction while SQLite is locked."""
    deadline = time.monotonic() + retry_seconds
    delay = 0.01
    while True:
        try:
            with engine.begin() as conn:
                return fn(conn)
        except OperationalError as exc:
            if not is_locked(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
