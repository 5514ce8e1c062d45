"""Runs: every logged run, filtered; select rows to open or compare (the selection is in the URL)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cascade_dashboard import data, downloads, state

COLUMNS = [
    "id",
    "policy_name",
    "mode",
    "rule",
    "alpha",
    "target",
    "drafter",
    "status",
    "started_at",
    "wall_tokens_per_second",
    "tokens_per_second",
    "speedup",
    "mean_acceptance_length",
    "acceptance_rate",
    "deferral_rate",
    "target_calls_per_token",
    "chrf",
    "target_logprob",
    "edit_similarity",
    "num_sequences",
    "baseline_run_id",
    "replica",
]
LABELS = {
    "policy_name": "policy",
    "alpha": "α",
    "wall_tokens_per_second": "tok/s",
    "tokens_per_second": "per-row tok/s",
    "speedup": "speed-up",
    "mean_acceptance_length": "τ",
    "acceptance_rate": "acceptance",
    "deferral_rate": "deferral",
    "target_calls_per_token": "target calls/token",
    "target_logprob": "target log-prob",
    "edit_similarity": "edit sim.",
    "num_sequences": "prompts",
    "baseline_run_id": "baseline",
}

st.title("Runs")
store = data.store_or_stop()
url = data.store_url()
runs = data.runs(url)
if runs.empty:
    st.info(f"No runs in {store.url} yet: `cascade run POLICY --prompt ...` logs one.")
    st.stop()

runs["started"] = pd.to_datetime(runs["started_at"], utc=True, format="ISO8601")
with st.expander("Filters", expanded=True):
    c1, c2, c3, c4 = st.columns(4)
    policy = c1.multiselect("Policy", sorted(runs["policy_name"].unique()), key="f_policy")
    mode = c2.multiselect("Mode", sorted(runs["mode"].unique()), key="f_mode")
    rule = c3.multiselect("Rule", sorted(runs["rule"].unique()), key="f_rule")
    status = c4.multiselect("Status", sorted(runs["status"].unique()), key="f_status")
    c5, c6, c7, c8 = st.columns(4)
    target = c5.multiselect("Target", sorted(runs["target"].unique()), key="f_target")
    drafter = c6.multiselect("Drafter", sorted(runs["drafter"].fillna("(none)").unique()), key="f_drafter")
    deployments = sorted(runs["deployment"].dropna().unique()) if "deployment" in runs else []
    deployment = c7.multiselect("Ray Serve deployment", deployments, key="f_deployment")
    lo, hi = runs["started"].min().date(), runs["started"].max().date()
    dates = c8.date_input("Started between", (lo, hi), min_value=lo, max_value=hi, key="f_dates")

shown = runs
for col, chosen in (("policy_name", policy), ("mode", mode), ("rule", rule), ("status", status), ("target", target)):
    if chosen:
        shown = shown[shown[col].isin(chosen)]
if drafter:
    shown = shown[shown["drafter"].fillna("(none)").isin(drafter)]
if deployment:
    shown = shown[shown["deployment"].isin(deployment)]
if isinstance(dates, tuple) and len(dates) == 2:
    day = shown["started"].dt.date
    shown = shown[(day >= dates[0]) & (day <= dates[1])]
shown = shown.sort_values("id", ascending=False).reset_index(drop=True)  # stable order: selections map to ids

for name in deployment:  # a deployment's replicas' runs, taken together: the cluster's traffic as one
    mine = shown[shown["deployment"] == name]
    st.metric(
        f"deployment {name}: {mine['replica'].nunique()} replicas, {len(mine)} runs",
        f"{int(mine['num_sequences'].sum())} requests · {int(mine['num_generated_tokens'].sum())} tokens",
        border=True,
    )

ids = shown["id"].tolist()
preselected = [ids.index(i) for i in state.get_list(state.RUNS) if i in ids]
st.caption(
    f"{len(shown)} of {len(runs)} runs · store {store.url} · speed-up: a `cascade bench` row's own (its timed "
    "passes against the bench's target-only row); any other run's throughput against the newest target-only run "
    "on the same target and prompts"
)
table = shown[COLUMNS].rename(columns=LABELS)
event = st.dataframe(
    table,
    key="runs_table",
    on_select="rerun",
    selection_mode="multi-row",
    hide_index=True,
    selection_default={"selection": {"rows": preselected, "columns": []}},
    column_config={
        "α": st.column_config.NumberColumn(format="%.3g"),
        "tok/s": st.column_config.NumberColumn(format="%.1f"),
        "speed-up": st.column_config.NumberColumn(format="%.2fx"),
        "τ": st.column_config.NumberColumn(format="%.2f"),
        "acceptance": st.column_config.NumberColumn(format="%.3f"),
        "deferral": st.column_config.NumberColumn(format="%.3f"),
        "target calls/token": st.column_config.NumberColumn(format="%.3f"),
    },
)
rows = event["selection"]["rows"] if event else preselected
selected = [int(ids[i]) for i in rows if i < len(ids)]
state.put(**{state.RUNS: selected})
downloads.table(table, "runs")

st.subheader("Open")
default = selected[0] if selected else int(ids[0])
c1, c2 = st.columns([2, 1])
run_id = c1.selectbox(
    "Run",
    ids,
    index=ids.index(default),
    key="open_run",
    format_func=lambda i: f"{i} · {shown.loc[ids.index(i), 'policy_name']}",
)
baseline = selected[1] if len(selected) > 1 else shown.loc[ids.index(run_id), "baseline_run_id"]
baseline = None if pd.isna(baseline) else int(baseline)
if c2.button("Open run detail", type="primary", key="open_detail"):
    st.switch_page("pages/run_detail.py", query_params=state.link_params(run=run_id, baseline=baseline))
if len(selected) > 1:
    st.write(f"Comparing: run {selected[0]} against run {selected[1]} (the first two selected rows).")
