"""AppTest helpers: the dashboard app on a given store, with selections injected through session state."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit import config
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[1] / "cascade_dashboard" / "app.py"
TIMEOUT = 120


def open_page(monkeypatch, url: str, page: str | None = None, **state) -> AppTest:
    """Run the app on `url`, then switch to `pages/<page>.py` with `state` in the session (None: Runs)."""
    monkeypatch.setenv("CASCADE_DASHBOARD_STORE", url)
    config.set_option("runner.magicEnabled", False)
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    if page is not None:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> list:
    return at.get("vega_lite_chart")


def metric(at: AppTest, label: str):
    found = [m for m in at.metric if m.label == label]
    assert found, f"no metric {label!r}: {[m.label for m in at.metric]}"
    return found[0]
