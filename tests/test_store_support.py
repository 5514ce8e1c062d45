"""Fixtures and helpers shared by the store tests, and the tests of the store's support code
(the per-user default location, password masking in messages).

`store_url` gives each test an empty store: a SQLite file, and a PostgreSQL schema of its
own when CASCADE_TEST_PG_URL points at a server (`eval "$(.ci/postgres.sh start)"`);
without it the PostgreSQL cases skip with that hint.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

from cascade.policy import Policy, parse_policy

PG_ENV = "CASCADE_TEST_PG_URL"
PG_HINT = (
    f"PostgreSQL store tests need {PG_ENV}=postgresql+psycopg://user:pass@host:port/db; "
    'start a local server with: eval "$(.ci/postgres.sh start)"'
)


def make_policy(
    name: str = "store-test", mode: str = "speculative", rule: str = "token_v3", alpha: float = 0.3
) -> Policy:
    data = {
        "name": name,
        "target": {"model": "models/target", "dtype": "float32", "device": "cpu"},
        "mode": mode,
        "rule": {"name": rule, "alpha": alpha},
        "decoding": {"temperature": 0.0, "schedule": {"name": "constant", "options": {"block_size": 4}}},
    }
    if mode != "target":
        data["drafter"] = {"plugin": "hf-model", "options": {"model": "models/tiny"}}
    return parse_policy(data, text=f"name: {name}\n# synthetic test policy\n")


def pg_schema_url(base: str, schema: str) -> str:
    """`base` with every connection's search_path set to `schema` (one isolated store per test)."""
    from sqlalchemy.engine import make_url

    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """An empty store URL; PostgreSQL cases skip unless CASCADE_TEST_PG_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_HINT)
    with pg_schema(base) as url:
        yield url


@contextlib.contextmanager
def pg_schema(base: str, prefix: str = "t_") -> Iterator[str]:
    """A fresh schema on the server at `base`, dropped afterwards: its URL (every connection's search_path set to
    it). A server named by the variable must answer: a CI failure, not a skip."""
    from sqlalchemy import create_engine, text

    schema = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield pg_schema_url(base, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def count_rows(url: str, table: str, where: str = "") -> int:
    from sqlalchemy import text

    from cascade.store import db

    engine = db.make_engine(url, immediate=False)
    try:
        with engine.connect() as conn:
            return conn.execute(text(f"SELECT count(*) FROM {table} {where}")).scalar_one()
    finally:
        engine.dispose()


# ---------------------------------------------------------------------- the default location


def test_the_default_folder_per_platform(tmp_path, monkeypatch):
    from pathlib import Path

    from cascade.home import user_dir
    from cascade.store.urls import default_url

    home = Path.home()
    assert user_dir({"CASCADE_HOME": str(tmp_path / "mine")}, "linux") == tmp_path / "mine"
    assert user_dir({"CASCADE_HOME": str(tmp_path)}, "win32") == tmp_path  # CASCADE_HOME wins everywhere
    assert user_dir({}, "linux") == home / ".local" / "share" / "cascade"
    assert user_dir({"XDG_DATA_HOME": str(tmp_path / "xdg")}, "linux") == tmp_path / "xdg" / "cascade"
    assert user_dir({"XDG_DATA_HOME": "relative/xdg"}, "linux") == home / ".local" / "share" / "cascade"  # XDG: ignored
    assert user_dir({}, "darwin") == home / "Library" / "Application Support" / "cascade"
    assert user_dir({"LOCALAPPDATA": str(tmp_path / "local")}, "win32") == tmp_path / "local" / "cascade"
    assert user_dir({}, "win32") == home / "AppData" / "Local" / "cascade"

    monkeypatch.chdir(tmp_path)
    relative = {"CASCADE_HOME": "rel"}
    assert user_dir(relative) == tmp_path / "rel"  # made absolute: the URL names one place whatever the cwd
    assert default_url(relative, create=False) == f"sqlite:///{tmp_path / 'rel' / 'cascade.db'}"
    assert not (tmp_path / "rel").exists()
    assert default_url(relative) == f"sqlite:///{tmp_path / 'rel' / 'cascade.db'}" and (tmp_path / "rel").is_dir()


# ---------------------------------------------------------------------- masking


def test_only_the_password_field_is_masked_even_a_one_letter_one():
    from sqlalchemy.exc import OperationalError

    from cascade.store import db

    assert db.mask_url("postgresql+psycopg://u:p@127.0.0.1:5432/p") == "postgresql+psycopg://u:***@127.0.0.1:5432/p"
    assert db.mask_url("not a url://u:p@host") == "not a url://u:***@host"  # unparsable: the same field only
    driver = 'connection to server at "127.0.0.1", port 1 failed: Connection refused (dsn postgresql://u:p@h/db)'
    exc = OperationalError("SELECT 1", {}, Exception(driver + "\nIs the server running?"))
    reason = db.short_reason(exc, db.parse_url("postgresql+psycopg://u:p@127.0.0.1:1/db"))
    assert (
        reason == 'connection to server at "127.0.0.1", port 1 failed: Connection refused (dsn postgresql://u:***@h/db)'
    )
    assert db.mask_passwords("host=h port=1 password=p user=u") == "host=h port=1 password=*** user=u"
    assert db.mask_passwords("password='p q' port") == "password=*** port"
    assert db.mask_passwords("port passed, pp") == "port passed, pp"  # no URL, no conninfo password: untouched


def test_an_unreachable_store_with_a_one_letter_password_keeps_its_message():
    from cascade.errors import CascadeError
    from cascade.store import Store

    with pytest.raises(CascadeError) as err:
        Store.open("postgresql+psycopg://u:p@127.0.0.1:1/nowhere")
    msg = str(err.value)
    assert msg.startswith("cannot open store postgresql+psycopg://u:***@127.0.0.1:1/nowhere: ")
    assert "***ort" not in msg and "port" in msg
