"""Trade-off explorer: quality relative to target-only against speed-up and target calls per token, for
every run with a target-only baseline on the same prompts; Pareto frontier, the within-1% line; click a
point to open its run."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cascade_dashboard import charts, data, downloads, state, tradeoff

st.title("Trade-off explorer")
store = data.store_or_stop()
url = data.store_url()
runs = data.runs(url)
metric = st.selectbox(
    "Quality metric", list(tradeoff.METRICS), key="tradeoff_metric", format_func=lambda m: tradeoff.METRICS[m]
)
pts = pd.DataFrame(tradeoff.points(runs.to_dict("records"), metric)) if not runs.empty else pd.DataFrame()
if pts.empty:
    st.info(
        "No run has both this quality metric and a target-only run on the same prompts and target "
        "(`cascade bench` and `cascade sweep` log both)."
    )
    st.stop()
st.caption(
    f"{len(pts)} runs · quality = {tradeoff.METRICS[metric]} (1 = target-only) · a point is within 1% when it "
    "keeps ≥ 99% of target-only's quality and of its parse rate (cascade sweep's rule) · dashed black: Pareto "
    "frontier · red: the within-1% line"
)
within = pts[pts["within_1pct"] & (pts["curve"] != "target-only")]
if not within.empty:
    best = within.sort_values("target_calls_per_token").iloc[0]
    st.success(
        f"Fewest target calls per token within 1%: run {int(best['run_id'])} ({best['policy']}, "
        f"α = {best['alpha']:g}): {best['target_calls_per_token']:.3f} calls/token, "
        f"speed-up {best['speedup']:.2f}x"
    )
c1, c2 = st.columns(2)
picked: list = []
with c1:
    chart = charts.tradeoff(pts, "speedup", "speed-up vs target-only")
    ev = st.altair_chart(chart, key="tradeoff_speed", on_select="rerun", width="stretch")
    picked += (ev["selection"].get("pick") or []) if ev else []
    downloads.chart_button(chart, "tradeoff-speedup")
with c2:
    chart = charts.tradeoff(pts, "target_calls_per_token", "target calls per token")
    ev = st.altair_chart(chart, key="tradeoff_calls", on_select="rerun", width="stretch")
    picked += (ev["selection"].get("pick") or []) if ev else []
    downloads.chart_button(chart, "tradeoff-calls")
downloads.table(pts, "tradeoff-points")
st.dataframe(pts, hide_index=True, key="tradeoff_table")
if picked:
    run_id = int(picked[0]["run_id"])
    st.switch_page("pages/run_detail.py", query_params=state.link_params(run=run_id))
