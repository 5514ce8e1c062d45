"""Download buttons: every table as CSV, every chart as its Vega-Lite JSON spec."""

from __future__ import annotations

import re

import altair as alt
import pandas as pd
import streamlit as st


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "data"


def table(df: pd.DataFrame, name: str) -> None:
    st.download_button(
        f"Download {name} (CSV)",
        df.to_csv(index=False).encode("utf-8"),
        file_name=f"{_slug(name)}.csv",
        mime="text/csv",
        key=f"dl-csv-{_slug(name)}",
        on_click="ignore",
    )


def chart(c: alt.TopLevelMixin, name: str) -> None:
    """Show `c` and a button for its Vega-Lite spec (data inlined)."""
    st.altair_chart(c, width="stretch")
    chart_button(c, name)


def chart_button(c: alt.TopLevelMixin, name: str) -> None:
    """The Vega-Lite spec download of a chart shown elsewhere (e.g. with a selection)."""
    st.download_button(
        f"Download {name} (Vega-Lite JSON)",
        c.to_json().encode("utf-8"),
        file_name=f"{_slug(name)}.vl.json",
        mime="application/json",
        key=f"dl-vl-{_slug(name)}",
        on_click="ignore",
    )
