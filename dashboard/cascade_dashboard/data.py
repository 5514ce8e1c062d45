"""The pages' data: the read-only store (`st.cache_resource`) and cached queries (`st.cache_data`).

Every query lives in `cascade.store.queries.dashboard`; this module only caches its results
(plain dicts and lists, or DataFrames built from them) and turns an unusable store into a
message in the page (`store_or_stop`).
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import streamlit as st

from cascade import CascadeError
from cascade.store.queries import dashboard as Q
from cascade.store.readonly import ReadOnlyStore, StoreStatus, check, open_readonly

STORE_ENV = "CASCADE_DASHBOARD_STORE"  # set by `cascade dashboard` (command.STORE_ENV)
TTL = 30  # seconds a query result is reused; runs logged meanwhile show up after this


def store_url() -> str:
    url = os.environ.get(STORE_ENV, "").strip()
    if url:
        return url
    from cascade.store import resolve_url

    return resolve_url(None) or ""


@st.cache_resource(show_spinner=False)
def _store(url: str) -> ReadOnlyStore:
    return open_readonly(url)


@st.cache_data(ttl=5, show_spinner=False)
def _status(url: str) -> StoreStatus:
    return check(_store(url))


def store_or_stop() -> ReadOnlyStore:
    """The read-only store, or a message in the page and `st.stop()` when it cannot be shown."""
    url = store_url()
    try:
        store = _store(url)
    except CascadeError as exc:
        st.error(f"Cannot open the store: {exc}")
        st.stop()
    status = _status(url)
    if not status.ok:
        (st.info if status.state == "empty" else st.error)(status.message)
        st.stop()
    return store


@st.cache_data(ttl=TTL, show_spinner="Reading runs…")
def runs(url: str) -> pd.DataFrame:
    return pd.DataFrame(Q.run_table(_store(url)))


@st.cache_data(ttl=TTL, show_spinner="Reading the run…")
def run_detail(url: str, run_id: int) -> dict[str, Any]:
    return Q.run_detail(_store(url), run_id)


@st.cache_data(ttl=TTL, show_spinner=False)
def sequences(url: str, run_id: int) -> pd.DataFrame:
    return pd.DataFrame(Q.list_sequences(_store(url), run_id))


@st.cache_data(ttl=TTL, show_spinner=False)
def sequence(url: str, sequence_id: int) -> dict[str, Any]:
    return Q.sequence_decisions(_store(url), sequence_id)


@st.cache_data(ttl=TTL, show_spinner="Reading drafted positions…")
def features(url: str, run_id: int) -> dict[str, Any]:
    return Q.draft_features(_store(url), run_id)


@st.cache_data(ttl=TTL, show_spinner=False)
def prompts(url: str, run_id: int) -> list[dict[str, Any]]:
    return Q.run_prompts(_store(url), run_id)


@st.cache_data(ttl=TTL, show_spinner=False)
def calibrations(url: str) -> pd.DataFrame:
    return pd.DataFrame(Q.calibrations(_store(url)))


def safe(fn, *args) -> Any:
    """`fn(*args)`, or an error message in the page and `st.stop()` for a store error (unknown run id...)."""
    try:
        return fn(*args)
    except CascadeError as exc:
        st.error(str(exc))
        st.stop()
