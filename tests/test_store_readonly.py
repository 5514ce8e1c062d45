"""cascade.store.readonly: the viewer's connection cannot write, and every unusable store is a status."""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError

from cascade.errors import CascadeError
from cascade.store import Store, migrate
from cascade.store.models import Run
from cascade.store.queries import list_runs
from cascade.store.readonly import ReadOnlyStore, check, open_readonly


@pytest.fixture
def url(tmp_path) -> str:
    u = f"sqlite:///{tmp_path / 'ro.db'}"
    Store.open(u).close()
    return u


def _write_attempts(store: ReadOnlyStore) -> list[str]:
    refused = []
    for sql in (
        "INSERT INTO runs (policy_name) VALUES ('x')",
        "DELETE FROM runs",
        "CREATE TABLE t (x INTEGER)",
        "UPDATE cascade_alembic_version SET version_num = 'x'",
    ):
        try:
            with store.reader.begin() as conn:
                conn.execute(text(sql))
        except DBAPIError:
            refused.append(sql)
    return refused


def test_sqlite_readonly_connection_refuses_every_write(url):
    store = open_readonly(url)
    try:
        assert len(_write_attempts(store)) == 4
        with pytest.raises(CascadeError, match="read-only"):
            store.write(lambda conn: conn.execute(insert(Run).values(policy_name="x")))
        assert list_runs(store) == []  # the read side works
        assert check(store).ok
    finally:
        store.close()


@pytest.mark.skipif(not os.environ.get("CASCADE_TEST_PG_URL"), reason="CASCADE_TEST_PG_URL not set")
def test_postgres_readonly_connection_refuses_every_write():
    url = os.environ["CASCADE_TEST_PG_URL"]
    Store.open(url).close()
    store = open_readonly(url)
    try:
        assert len(_write_attempts(store)) == 4
        assert check(store).ok
    finally:
        store.close()


def test_password_is_masked_and_kept_for_children():
    store = open_readonly("postgresql+psycopg://me:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in store.url and "***" in store.url
    assert store.source_url.endswith("me:s3cret@127.0.0.1:1/db")
    status = check(store)
    assert status.state == "unreachable" and "s3cret" not in status.message


def test_missing_file_is_a_cascade_error_and_never_created(tmp_path):
    path = tmp_path / "none.db"
    with pytest.raises(CascadeError, match="no store at"):
        open_readonly(f"sqlite:///{path}")
    assert not path.exists()


def test_empty_older_newer_foreign_and_locked(tmp_path, url):
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert check(open_readonly(f"sqlite:///{empty}")).state == "empty"

    older = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(older, "0003")
    status = check(open_readonly(older))
    assert status.state == "older" and "cascade db upgrade" in status.message

    with sqlite3.connect(tmp_path / "ro.db") as conn:
        conn.execute("UPDATE cascade_alembic_version SET version_num = 'zz99'")
    assert check(open_readonly(url)).state == "newer"

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE runs (x INTEGER)")
    assert check(open_readonly(f"sqlite:///{foreign}")).state == "foreign"


def test_locked_database_is_reported_not_raised(tmp_path):
    path = tmp_path / "locked.db"
    u = f"sqlite:///{path}"
    Store.open(u).close()
    holder = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")  # rollback journal: an exclusive lock blocks readers
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("s", check(open_readonly(u))))
        t.start()
        t.join(30)
        assert result["s"].state == "locked", result["s"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
