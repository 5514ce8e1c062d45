"""The dashboard's entry point (`streamlit run app.py`, which `cascade dashboard` does): the navigation.

One file per page under pages/ (AppTest can switch only to file pages); pages are thin: data
comes from `cascade_dashboard.data`, whose queries live in `cascade.store.queries.dashboard`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
PAGES = [
    ("pages/runs.py", "Runs", ":material/table:", "runs"),
    ("pages/run_detail.py", "Run detail", ":material/insights:", "run"),
    ("pages/token_view.py", "Token view", ":material/text_fields:", "tokens"),
    ("pages/tradeoff.py", "Trade-off explorer", ":material/scatter_plot:", "tradeoff"),
    ("pages/whatif.py", "What-if α", ":material/tune:", "whatif"),
    ("pages/calibrate.py", "Calibrate", ":material/straighten:", "calibrate"),
]

st.set_page_config(page_title="cascade dashboard", page_icon=":material/bolt:", layout="wide")
nav = st.navigation(
    [
        st.Page(HERE / path, title=title, icon=icon, url_path=url, default=(i == 0))
        for i, (path, title, icon, url) in enumerate(PAGES)
    ]
)
nav.run()
