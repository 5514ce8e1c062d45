"""What is selected, shared by the pages: in the URL (`?run=3&seq=12&runs=3,5`) so a view can be shared,
mirrored in `st.session_state` (tests inject selections there)."""

from __future__ import annotations

import streamlit as st

RUN, SEQ, RUNS, BASELINE = "run", "seq", "runs", "baseline"


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def get(name: str) -> int | None:
    """An id selected through the URL (first) or the session state."""
    value = _int(st.query_params.get(name))
    if value is None:
        value = _int(st.session_state.get(name))
    return value


def get_list(name: str) -> list[int]:
    raw = st.query_params.get(name) or st.session_state.get(name) or ""
    items = raw if isinstance(raw, list) else str(raw).split(",")
    return [v for v in (_int(x) for x in items) if v is not None]


def put(**values: int | list[int] | None) -> None:
    """Select ids: written to the URL and the session state (None clears)."""
    for name, value in values.items():
        if value is None or value == []:
            st.query_params.pop(name, None)
            st.session_state.pop(name, None)
            continue
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        st.query_params[name] = text
        st.session_state[name] = text


def link_params(**values: int | None) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}


def pick_run(runs, label: str, key: str) -> int:
    """A run chosen from `runs` (a frame with `id` and `policy_name`): the one in the URL when listed, else
    the first. The caller puts it back in the URL (with anything else the page keeps there)."""
    ids = runs["id"].tolist()
    chosen = get(RUN)
    names = runs.set_index("id")["policy_name"]
    return st.selectbox(
        label,
        ids,
        index=ids.index(chosen) if chosen in ids else 0,
        key=key,
        format_func=lambda i: f"{i} · {names.loc[i]}",
    )
