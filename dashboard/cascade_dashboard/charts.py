"""Altair charts of the pages (Vega-Lite specs that tests can read)."""

from __future__ import annotations

import altair as alt
import pandas as pd


def per_position(df: pd.DataFrame) -> alt.Chart:
    """Acceptance rate and deferral rate by block position."""
    long = df.melt(
        id_vars=["position", "drafted"],
        value_vars=["acceptance_rate", "deferral_rate"],
        var_name="rate",
        value_name="value",
    )
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("position:O", title="position in the block"),
            y=alt.Y("value:Q", title="share of drafted tokens", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("rate:N", title=None),
            tooltip=["position", "rate", "value", "drafted"],
        )
        .properties(title="Acceptance and deferral by position", height=260)
    )


def histogram(df: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("accepted:O", title="drafts accepted in the step"),
            y=alt.Y("steps:Q", title="steps"),
            tooltip=["accepted", "steps"],
        )
        .properties(title="Acceptance length", height=260)
    )


def step_times(df: pd.DataFrame) -> alt.Chart:
    long = df.melt(
        id_vars=["step", "steps"],
        value_vars=["draft_seconds", "verify_seconds"],
        var_name="phase",
        value_name="seconds",
    )
    long["ms"] = long["seconds"] * 1000
    return (
        alt.Chart(long)
        .mark_area(opacity=0.8)
        .encode(
            x=alt.X("step:Q", title="step index"),
            y=alt.Y("ms:Q", stack=True, title="mean ms per step"),
            color=alt.Color("phase:N", title=None),
            tooltip=["step", "phase", "ms", "steps"],
        )
        .properties(title="Draft vs verify time per step", height=260)
    )


def tradeoff(df: pd.DataFrame, x: str, x_title: str, *, pick: bool = True) -> alt.LayerChart:
    """Relative quality against `x`: one colour per curve, the Pareto frontier, the within-1% line."""
    front_col = "pareto_speedup" if x == "speedup" else "pareto_calls"
    sel = alt.selection_point(name="pick", fields=["run_id"], on="click") if pick else None
    base = alt.Chart(df).encode(
        x=alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(zero=False)),
        y=alt.Y("quality_rel:Q", title="quality relative to target-only", scale=alt.Scale(zero=False)),
    )
    pts = base.mark_circle(size=90).encode(
        color=alt.Color("curve:N", title="curve"),
        tooltip=["run_id", "policy", "curve", "alpha", x, "quality_rel", "within_1pct"],
    )
    if sel is not None:
        pts = pts.add_params(sel)
    front = (
        alt.Chart(df[df[front_col]].sort_values(x))
        .mark_line(color="black", strokeDash=[4, 3])
        .encode(x=f"{x}:Q", y="quality_rel:Q")
    )
    guide = alt.Chart(pd.DataFrame({"y": [0.99]})).mark_rule(color="#d62728").encode(y="y:Q")
    return alt.layer(pts, front, guide).properties(height=360, title=f"Quality vs {x_title}")


def whatif(df: pd.DataFrame, alpha: float, logged: float | None) -> alt.LayerChart:
    long = df.melt(
        id_vars=["alpha"],
        value_vars=["deferral_rate", "acceptance_rate", "target_calls_per_token"],
        var_name="estimate",
        value_name="value",
    )
    lines = (
        alt.Chart(long)
        .mark_line()
        .encode(
            x=alt.X("alpha:Q", title="α"),
            y=alt.Y("value:Q", title="first-order estimate"),
            color=alt.Color("estimate:N", title=None),
            tooltip=["alpha", "estimate", "value"],
        )
    )
    rules = pd.DataFrame(
        {
            "alpha": [alpha] + ([logged] if logged is not None else []),
            "which": ["chosen α"] + (["logged α"] if logged is not None else []),
        }
    )
    marks = (
        alt.Chart(rules)
        .mark_rule(strokeDash=[4, 3])
        .encode(x="alpha:Q", color=alt.value("#555"), tooltip=["which", "alpha"])
    )
    return alt.layer(lines, marks).properties(height=320, title="Estimates as α moves (first-order)")
