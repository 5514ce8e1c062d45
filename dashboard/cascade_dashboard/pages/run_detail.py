"""Run detail: KPI cards with deltas against a baseline run, per-position acceptance and deferral, the
acceptance-length histogram, draft vs verify time, and the per-sequence table with alarms."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cascade_dashboard import alarms, charts, data, downloads, kpis, state

st.title("Run detail")
store = data.store_or_stop()
url = data.store_url()
runs = data.runs(url)
if runs.empty:
    st.info("No runs in the store yet.")
    st.stop()
ids = runs["id"].tolist()
run_id = state.pick_run(runs, "Run", "detail_run")
row = runs.set_index("id").loc[run_id]
default_base = state.get(state.BASELINE)
if default_base is None and not pd.isna(row["baseline_run_id"]):
    default_base = int(row["baseline_run_id"])
options = [None] + [i for i in ids if i != run_id]
baseline_id = st.selectbox(
    "Baseline",
    options,
    index=options.index(default_base) if default_base in options else 0,
    key="detail_baseline",
    format_func=lambda i: "(none)" if i is None else f"{i} · {runs.set_index('id').loc[i, 'policy_name']}",
)
state.put(**{state.RUN: run_id, state.BASELINE: baseline_id})

detail = data.safe(data.run_detail, url, run_id)
base = data.safe(data.run_detail, url, baseline_id) if baseline_id is not None else None
info = detail["run"]
st.caption(
    f"**{info['policy_name']}** · mode {info['mode']} · rule {info['rule']} at α = {info['alpha']:g} · "
    f"T = {info['temperature']:g} · block {info['block_size']} · "
    f"batch {(info.get('info') or {}).get('batch_size', 1)} · target {info['target']} · "
    f"drafter {info['drafter'] or '-'} · {info['status']} · {detail['rows']['finished_sequences']} sequences"
)

cols = st.columns(4)
for i, card in enumerate(kpis.cards(detail, base)):
    cols[i % 4].metric(card["label"], card["value"], card["delta"], delta_color=card["delta_color"], border=True)
if base is not None:
    st.caption(f"Deltas against run {baseline_id} ({base['run']['policy_name']}).")

positions = pd.DataFrame(detail["per_position"])
if not positions.empty:
    positions["deferral_rate"] = positions["deferred"] / positions["drafted"]
    c1, c2 = st.columns(2)
    with c1:
        downloads.chart(charts.per_position(positions), f"run-{run_id}-per-position")
    with c2:
        hist = pd.DataFrame(detail["histogram"])
        downloads.chart(charts.histogram(hist), f"run-{run_id}-acceptance-length")
    downloads.table(positions, f"run-{run_id}-per-position")
else:
    st.info("No drafted positions in this run (target-only or drafter-only): nothing to accept or defer.")
times = pd.DataFrame(detail["step_times"])
if not times.empty:
    downloads.chart(charts.step_times(times), f"run-{run_id}-step-times")

st.subheader("Sequences")
seqs = data.sequences(url, run_id)
if seqs.empty:
    st.info("No sequences logged.")
    st.stop()
seqs["alarm"] = [alarms.alarm(r) for r in seqs.to_dict("records")]
flagged = int((seqs["alarm"] != "").sum())
st.write(
    f"{flagged} of {len(seqs)} sequences flagged (garbled: acceptance < {alarms.GARBLED_BELOW}; loop: "
    f"acceptance > {alarms.LOOP_ABOVE} with ≥ {alarms.LOOP_REPEAT:.0%} repeated 4-grams)."
)
seq_cols = [
    "id",
    "index",
    "alarm",
    "num_generated_tokens",
    "acceptance_rate",
    "mean_acceptance_length",
    "deferral_rate",
    "target_calls_per_token",
    "tokens_per_second",
    "edit_similarity",
    "chrf",
    "finish_reason",
    "output_text",
]
table = seqs[[c for c in seq_cols if c in seqs.columns]].sort_values(["alarm", "index"], ascending=[False, True])
table = table.reset_index(drop=True)
ev = st.dataframe(table, key="seq_table", on_select="rerun", selection_mode="single-row", hide_index=True)
downloads.table(table, f"run-{run_id}-sequences")
rows = ev["selection"]["rows"] if ev else []
seq_id = int(table.loc[rows[0], "id"]) if rows else int(table.loc[0, "id"])
if st.button(f"Open token view of sequence {seq_id}", type="primary", key="open_tokens"):
    st.switch_page("pages/token_view.py", query_params=state.link_params(run=run_id, seq=seq_id))
