"""Token view: one sequence's output as coloured spans by how each token came, block boundaries visible,
the logged numbers on hover and in the linked table (select a row to outline its token)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cascade_dashboard import data, downloads, state, tokens


@st.cache_resource(show_spinner="Loading the tokenizer…", max_entries=4)
def token_texts(target: str, ids: tuple[int, ...]) -> dict[int, str]:
    return tokens.load_texts(target, set(ids))


st.title("Token view")
store = data.store_or_stop()
url = data.store_url()
runs = data.runs(url)
if runs.empty:
    st.info("No runs in the store yet.")
    st.stop()
run_id = state.pick_run(runs, "Run", "tokens_run")
seqs = data.sequences(url, run_id)
if seqs.empty:
    st.info(f"Run {run_id} has no sequences.")
    st.stop()
seq_ids = seqs["id"].tolist()
chosen_seq = state.get(state.SEQ)
seq_id = st.selectbox(
    "Sequence",
    seq_ids,
    index=seq_ids.index(chosen_seq) if chosen_seq in seq_ids else 0,
    key="tokens_seq",
    format_func=lambda i: f"#{seqs.set_index('id').loc[i, 'index']} (id {i})",
)
state.put(**{state.RUN: run_id, state.SEQ: seq_id})

got = data.sequence(url, seq_id)
decisions = got["decisions"]
run = got["run"]
st.caption(
    f"**{run['policy_name']}** · rule {run['rule']} at α = {run['alpha']:g} · T = {run['temperature']:g} · "
    f"target {run['target']}"
)
if not decisions:
    st.info("No decision rows for this sequence (logged without decisions).")
    st.stop()
needed = tuple(sorted({t for d in decisions for t in (d["emitted_token"], d["drafted_token"]) if t is not None}))
texts = token_texts(run["target"], needed)
if not texts:
    st.warning(f"Could not load the tokenizer of {run['target']}: tokens are shown as ids.")

rows = pd.DataFrame(tokens.table_rows(decisions, texts))
show_rejected = st.toggle("Show rejected drafts (struck through)", key="show_rejected")
counts = rows.groupby("how").size().to_dict()
st.html(tokens.legend_html())
st.write(" · ".join(f"{label}: **{counts.get(label, 0)}**" for label, _ in tokens.HOW.values()))
output_slot = st.container()  # filled below, once the table's selection is known
st.subheader("Decisions")
ev = st.dataframe(rows, key="token_table", on_select="rerun", selection_mode="single-row", hide_index=True)
downloads.table(rows, f"sequence-{seq_id}-decisions")
picked = ev["selection"]["rows"] if ev else []
highlight = int(rows.loc[picked[0], "#"]) if picked else None
with output_slot:
    st.subheader("Output")
    st.html(tokens.spans_html(decisions, texts, show_rejected=show_rejected, highlight=highlight))
with st.expander("Prompt"):
    st.code(got["sequence"]["prompt_text"], language="python")
