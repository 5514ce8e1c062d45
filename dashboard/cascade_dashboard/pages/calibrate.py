"""Calibrate: propose α for a rule from logged data, for a target share of target-decided tokens (from a
run's drafted positions) or a quality floor (from logged runs of that rule on the same prompts), and
offer the derived policy as YAML; calibration records the store holds are listed below."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cascade_dashboard import data, downloads, jobs, state, tradeoff, whatif

st.title("Calibrate")
store = data.store_or_stop()
url = data.store_url()
runs = data.runs(url)
spec = runs[runs["num_draft_tokens"] > 0] if not runs.empty else runs
if spec.empty:
    st.info("No run with drafted positions in the store: calibration reads a speculative run's logged features.")
    st.stop()
run_id = state.pick_run(spec, "Calibrate on run", "cal_run")
state.put(**{state.RUN: run_id})
row = spec.set_index("id").loc[run_id]
f = data.features(url, run_id)
a = whatif.arrays(f)
rules = [r for r in whatif.RULES if whatif.computable(r, f) and r != "none"]
if not rules:
    st.info("This run's logged features cannot drive any closed-form rule.")
    st.stop()
c1, c2 = st.columns(2)
rule = c1.selectbox("Rule", rules, index=rules.index(row["rule"]) if row["rule"] in rules else 0, key="cal_rule")
objective = c2.radio("Objective", ["target share", "quality floor"], horizontal=True, key="cal_objective")

alpha = None
if objective == "target share":
    share = st.slider("Share of drafted tokens decided by the target (deferred)", 0.0, 1.0, 0.5, 0.01, key="cal_share")
    found = whatif.alpha_for_share(rule, share, a)
    alpha = found["alpha"]
    temperature = float(row["temperature"])
    est = whatif.estimate(rule, alpha, a, temperature, f["steps"], f["target_calls"])
    st.metric("proposed α", f"{alpha:.4g}", border=True)
    st.write(
        f"At α = {alpha:.4g}, {found['share']:.1%} of run {run_id}'s {len(f['p_max'])} drafted positions are "
        f"deferred (asked: {share:.1%}); first-order estimates: acceptance {est['acceptance_rate']:.3f}, "
        f"τ {est['mean_acceptance_length']:.2f}, target calls/token {est['target_calls_per_token']:.3f}."
    )
else:
    floor = st.slider("Quality floor (relative to target-only)", 0.80, 1.0, 0.99, 0.005, key="cal_floor")
    metric = st.selectbox(
        "Quality metric", list(tradeoff.METRICS), key="cal_metric", format_func=lambda m: tradeoff.METRICS[m]
    )
    same = runs[(runs["rule"] == rule) & (runs["prompt_set"] == row["prompt_set"]) & (runs["target"] == row["target"])]
    pts = pd.DataFrame(tradeoff.points(runs.to_dict("records"), metric))
    pts = pts[pts["run_id"].isin(same["id"])] if not pts.empty else pts
    ok = pts[pts["quality_rel"] >= floor] if not pts.empty else pts
    if ok.empty:
        st.info(
            f"No logged {rule} run on these prompts keeps {floor:.1%} of target-only's quality; sweep α "
            "(`cascade sweep`) or launch runs from What-if α."
        )
    else:
        best = ok.sort_values(["target_calls_per_token", "run_id"]).iloc[0]
        alpha = float(best["alpha"])
        st.metric("proposed α", f"{alpha:.4g}", border=True)
        st.write(
            f"Run {int(best['run_id'])} at α = {alpha:.4g} keeps {best['quality_rel']:.1%} of target-only's "
            f"quality with {best['target_calls_per_token']:.3f} target calls per token (the fewest among the "
            f"{len(ok)} logged {rule} runs at or above the floor)."
        )
    downloads.table(pts, f"calibrate-{rule}-runs")

if alpha is not None:
    detail = data.safe(data.run_detail, url, run_id)
    policy = jobs.derived_policy(detail["run"]["policy_yaml"], rule, alpha)
    text = jobs.policy_yaml(policy)
    st.code(text, language="yaml")
    st.download_button(
        "Download the policy (YAML)",
        text.encode("utf-8"),
        file_name=f"{policy.name}.yaml",
        mime="application/x-yaml",
        key="cal_yaml",
        on_click="ignore",
    )

st.subheader("Calibration records")
records = data.calibrations(url)
if records.empty:
    st.caption(
        "No calibration records in this store yet: `cascade calibrate POLICY --share S` "
        "(or `--quality-floor Q`) writes one."
    )
else:
    st.dataframe(records, hide_index=True, key="cal_records")
    downloads.table(records, "calibrations")
