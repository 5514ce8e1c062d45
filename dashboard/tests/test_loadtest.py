"""The load generator at a small scale: the store it writes adds up and every page loads on it."""

from __future__ import annotations

import pytest

from cascade.store import Store
from cascade.store.queries import check_totals, list_runs
from cascade_dashboard import loadtest


@pytest.mark.slow
def test_generate_small_store_and_measure_every_page(tmp_path):
    url = f"sqlite:///{tmp_path / 'load.db'}"
    out = loadtest.generate(url, runs=12, sequences=3, steps=6, templates=4, prompt_sets=2)
    with Store.open(url) as store:
        runs = list_runs(store, limit=100)
        assert len(runs) == 12 and sum(r["mode"] == "target" for r in runs) == 2
        assert all(check_totals(store, r["id"]) == [] for r in runs)
        with store.reader.connect() as conn:
            (n,) = conn.exec_driver_sql("SELECT count(*) FROM decisions").one()
    assert n == out["decisions"] > 0
    times = loadtest.measure(url, repeats=1)
    assert set(times) == set(loadtest.PAGES) and all(t[0] > 0 for t in times.values())
