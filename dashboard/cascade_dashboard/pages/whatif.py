"""What-if α: re-apply a rule at another α to a run's logged drafted positions (a first-order estimate),
and launch a real run of the derived policy on the same prompts in the background."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from cascade_dashboard import charts, data, downloads, jobs, state, whatif

st.title("What-if α")
store = data.store_or_stop()
url = data.store_url()
runs = data.runs(url)
spec = runs[runs["num_draft_tokens"] > 0] if not runs.empty else runs
if spec.empty:
    st.info("No run with drafted positions in the store: what-if needs a speculative run's logged features.")
    st.stop()
run_id = state.pick_run(spec, "Logged run", "whatif_run")
state.put(**{state.RUN: run_id})
row = spec.set_index("id").loc[run_id]
f = data.features(url, run_id)
a = whatif.arrays(f)
detail = data.safe(data.run_detail, url, run_id)
own, why = whatif.logged_rule(detail["run"]["policy_yaml"], (detail["run"].get("info") or {}).get("policy_dir"))
if why:
    st.info(why)
rules = whatif.choices(f, own)
if not rules:
    st.info("This run's logged features hold neither q nor p: no rule can be re-applied.")
    st.stop()
c1, c2 = st.columns([1, 2])
names = list(rules)
name = c1.selectbox("Rule", names, index=names.index(row["rule"]) if row["rule"] in names else 0, key="whatif_rule")
rule = rules[name]
lo, hi = whatif.slider_range(rule)
logged_alpha = float(row["alpha"]) if name == row["rule"] else None
start = min(max(logged_alpha if logged_alpha is not None else lo, lo), hi)
alpha = c2.slider("α", lo, hi, start, step=(hi - lo) / 200, key="alpha", bind="query-params")
temperature = float(row["temperature"])
est = whatif.estimate(rule, alpha, a, temperature, f["steps"], f["target_calls"])
st.warning(
    "First-order estimate: each logged position is re-decided on its own; with another α later positions "
    "would have seen other prefixes. Launch a real run below to measure.",
    icon=":material/info:",
)
if f["truncated"]:
    st.caption(f"Estimated on the first {len(f['p_max'])} drafted positions of the run.")
logged = {
    "deferral_rate": row["deferral_rate"],
    "acceptance_rate": row["acceptance_rate"],
    "mean_acceptance_length": row["mean_acceptance_length"],
    "target_calls_per_token": row["target_calls_per_token"],
}
cols = st.columns(4)
for i, (key, label) in enumerate(
    (
        ("deferral_rate", "deferral rate"),
        ("acceptance_rate", "acceptance"),
        ("mean_acceptance_length", "τ"),
        ("target_calls_per_token", "target calls / token"),
    )
):
    cols[i].metric(
        f"estimated {label}",
        f"{est[key]:.3f}",
        f"{est[key] - logged[key]:+.3f} vs logged",
        delta_color="off",
        border=True,
    )
grid = pd.DataFrame(whatif.curve(rule, a, temperature, 41, f["steps"], f["target_calls"], extra=[alpha]))
downloads.chart(charts.whatif(grid, alpha, logged_alpha), f"whatif-run-{run_id}-{name}")
downloads.table(grid, f"whatif-run-{run_id}-{name}")

st.subheader("Measure it: a real run of the derived policy")
policy = jobs.derived_policy(detail["run"]["policy_yaml"], name, alpha)
prompts = data.prompts(url, run_id)
c1, c2 = st.columns([3, 1])
base_dir = c1.text_input(
    "Relative model folders resolve against",
    str(jobs.guess_base_dir(policy.target.model, (detail["run"].get("info") or {}).get("policy_dir"))),
    key="whatif_base_dir",
)
max_new = c2.number_input("max new tokens", 1, 4096, int(policy.decoding.max_new_tokens), key="whatif_max_new")
st.code(jobs.policy_yaml(policy), language="yaml")
if st.button(f"Run {policy.name} on the same {len(prompts)} prompts", type="primary", key="whatif_launch"):
    job = jobs.launch(policy, prompts, store.source_url, max_new_tokens=int(max_new), base_dir=Path(base_dir))
    st.session_state.setdefault("jobs", []).append(job)


@st.fragment(run_every=2)
def progress() -> None:
    for job in st.session_state.get("jobs", []):
        s = job.state()
        label = f"{job.folder.name}: {s['done']}/{s['total']} prompts, {s['seconds']:.0f} s"
        if s["returncode"] is None:
            st.progress(s["done"] / max(s["total"], 1), text=label)
        elif s["returncode"] == 0:
            st.success(f"{label}: done, logged as run {s['run_id']} (it appears in Runs within {data.TTL} s)")
        else:
            st.error(f"{label}: failed (exit {s['returncode']})\n\n{job.error_tail()}")


if st.session_state.get("jobs"):
    progress()
