"""A sequence's tokens as coloured spans: how each token came, block boundaries, the logged numbers on hover.

Token texts come from the run's target tokenizer (loaded once per target, `st.cache_resource` in the
page); when it cannot be loaded the spans show token ids.
"""

from __future__ import annotations

import html
import math
from typing import Any

HOW = {  # how a token came -> (label, background colour)
    "kept": ("draft kept by the rule (not deferred)", "#c7e9c0"),
    "verified": ("draft deferred and accepted by the target", "#9ecae1"),
    "correction": ("correction by the target", "#fdae6b"),
    "bonus": ("bonus token of the target", "#dadaeb"),
    "target": ("target-only token", "#e0e0e0"),
    "rejected": ("rejected draft (not in the output)", "#fcbba1"),
}


def how(row: dict[str, Any]) -> str:
    kind = row["kind"]
    if kind == "draft":
        if not row.get("accepted"):
            return "rejected"
        return "verified" if row.get("deferred") else "kept"
    return kind if kind in HOW else "target"


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def tooltip(row: dict[str, Any]) -> str:
    parts = [HOW[how(row)][0], f"step {row['step']}, position {row['position']}"]
    for name, label in (("q_x", "q(x)"), ("p_x", "p(x)"), ("q_max", "max q"), ("p_max", "max p"), ("d_tv", "D_TV")):
        parts.append(f"{label} = {_fmt(row.get(name))}")
    if row["kind"] == "draft":
        parts.append(f"rule {row['rule']} at α = {_fmt(row['alpha'])}: {'defer' if row.get('deferred') else 'keep'}")
    return "\n".join(parts)


def table_rows(decisions: list[dict[str, Any]], texts: dict[int, str]) -> list[dict[str, Any]]:
    """The linked table: one row per decision with its text and how it came."""
    out = []
    for i, d in enumerate(decisions):
        tok = d["emitted_token"] if d["emitted_token"] is not None else d["drafted_token"]
        out.append(
            {
                "#": i,
                "step": d["step"],
                "position": d["position"],
                "token": texts.get(tok, f"⟨{tok}⟩"),
                "how": HOW[how(d)][0],
                "q(x)": d.get("q_x"),
                "p(x)": d.get("p_x"),
                "max q": d.get("q_max"),
                "max p": d.get("p_max"),
                "D_TV": d.get("d_tv"),
                "deferred": d.get("deferred"),
                "accepted": d.get("accepted"),
            }
        )
    return out


def spans_html(
    decisions: list[dict[str, Any]], texts: dict[int, str], *, show_rejected: bool = False, highlight: int | None = None
) -> str:
    """The output as spans (block boundaries as a bar before each step's first token); `highlight`: the
    index of a decision row to outline."""
    out = [
        '<div style="font-family: monospace; white-space: pre-wrap; overflow-wrap: anywhere; word-break: break-all; '
        'line-height: 1.9">'
    ]
    last_step = None
    for i, d in enumerate(decisions):
        kind = how(d)
        if kind == "rejected" and not show_rejected:
            continue
        if d["step"] != last_step and last_step is not None:
            out.append('<span style="border-left: 2px solid #555; margin: 0 1px"></span>')
        last_step = d["step"]
        tok = d["emitted_token"] if d["emitted_token"] is not None else d["drafted_token"]
        text = texts.get(tok, f"⟨{tok}⟩")
        style = f"background: {HOW[kind][1]}; border-radius: 2px"
        if kind == "rejected":
            style += "; text-decoration: line-through; opacity: 0.7"
        if i == highlight:
            style += "; outline: 2px solid #d62728"
        out.append(
            f'<span class="tok tok-{kind}" data-i="{i}" title="{html.escape(tooltip(d))}" '
            f'style="{style}">{html.escape(text)}</span>'
        )
    out.append("</div>")
    return "".join(out)


def legend_html() -> str:
    items = "".join(
        f'<span style="background: {c}; padding: 1px 6px; margin-right: 8px; border-radius: 2px">'
        f"{html.escape(label)}</span>"
        for label, c in HOW.values()
    )
    return f'<div style="font-size: 0.85em; line-height: 2">{items}</div>'


def load_texts(target: str, token_ids: set[int]) -> dict[int, str]:
    """Each token id's text under the target's tokenizer; {} when it cannot be loaded (offline, gone)."""
    try:
        from transformers import AutoTokenizer

        from cascade_dashboard.jobs import guess_base_dir

        where = guess_base_dir(target) / target  # a policy's relative folder (the store keeps it as written)
        tok = AutoTokenizer.from_pretrained(str(where) if where.exists() else target, local_files_only=True)
    except Exception:  # noqa: BLE001  any failure: fall back to ids, the page says so
        return {}
    return {i: tok.decode([i]) for i in token_ids if i is not None}
