"""A missing, empty, older-schema or unreachable store is a message in every page, never a traceback."""

from __future__ import annotations

import sqlite3

import pytest
from apptest import open_page

from cascade.store import migrate

PAGES = [None, "run_detail", "token_view", "tradeoff", "whatif", "calibrate"]


@pytest.mark.parametrize("page", PAGES)
def test_missing_store(monkeypatch, tmp_path, page):
    at = open_page(monkeypatch, f"sqlite:///{tmp_path / 'nothing.db'}", page)
    assert "no store at" in at.error[0].value
    assert not (tmp_path / "nothing.db").exists()


def test_empty_store_says_nothing_is_logged(monkeypatch, tmp_path):
    sqlite3.connect(tmp_path / "empty.db").close()
    at = open_page(monkeypatch, f"sqlite:///{tmp_path / 'empty.db'}", "run_detail")
    assert "empty" in at.info[0].value


def test_older_schema_says_how_to_upgrade(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0003")
    at = open_page(monkeypatch, url, None)
    assert "cascade db upgrade" in at.error[0].value


def test_schema_without_runs_says_so(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    migrate.upgrade(url)
    for page in PAGES:
        at = open_page(monkeypatch, url, page)
        assert at.info, page  # "no runs yet" and the like


def test_unreachable_postgres_masks_the_password(monkeypatch):
    at = open_page(monkeypatch, "postgresql+psycopg://me:s3cret@127.0.0.1:1/db", "tradeoff")
    assert "cannot read store" in at.error[0].value and "s3cret" not in at.error[0].value
