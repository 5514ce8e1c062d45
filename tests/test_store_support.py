"""Fixtures and helpers shared by the store tests (this module has no tests of its own).

`store_url` gives each test an empty store: a SQLite file, and a PostgreSQL schema of its
own when CASCADE_TEST_PG_URL points at a server (`eval "$(.ci/postgres.sh start)"`);
without it the PostgreSQL cases skip with that hint.
"""

from __future__ import annotations

import os
import uuid

import pytest

from cascade.policy import Policy, parse_policy

PG_ENV = "CASCADE_TEST_PG_URL"
PG_HINT = (f"PostgreSQL store tests need {PG_ENV}=postgresql+psycopg://user:pass@host:port/db; "
           "start a local server with: eval \"$(.ci/postgres.sh start)\"")


def make_policy(name: str = "store-test", mode: str = "speculative", rule: str = "token_v3",
                alpha: float = 0.3) -> Policy:
    data = {"name": name, "target": {"model": "models/target", "dtype": "float32", "device": "cpu"},
            "mode": mode, "rule": {"name": rule, "alpha": alpha},
            "decoding": {"temperature": 0.0, "block_size": 4}}
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
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:  # a server named by the variable must answer: a CI failure, not a skip
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
