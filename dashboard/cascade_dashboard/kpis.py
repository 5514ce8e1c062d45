"""KPI cards: a run's headline numbers and their deltas against a baseline run."""

from __future__ import annotations

import math
from typing import Any

KPIS = [  # (key in totals/quality, label, format, higher is better)
    ("throughput", "tok/s (wall clock)", "{:.1f}", True),
    ("mean_acceptance_length", "τ (tokens per target call)", "{:.2f}", True),
    ("acceptance_rate", "acceptance", "{:.3f}", True),
    ("deferral_rate", "deferral rate", "{:.3f}", False),
    ("target_calls_per_token", "target calls / token", "{:.3f}", False),
    ("edit_similarity", "first-line edit similarity", "{:.1f}", True),
    ("chrf", "chrF", "{:.1f}", True),
    ("target_logprob", "target log-prob", "{:.3f}", True),
]


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def has_wall(detail: dict[str, Any]) -> bool:
    return detail["totals"].get("wall_tokens_per_second") is not None


def values(detail: dict[str, Any], wall: bool | None = None) -> dict[str, float | None]:
    """The KPI values of a `run_detail` result. Its throughput is its tokens over its wall-clock decoding time
    (`wall`, default: when recorded) or the per-row figure (runs logged before the store recorded wall-clock time;
    the same for one row at a time)."""
    merged = {**detail["totals"], **detail["quality"]}
    wall = has_wall(detail) if wall is None else wall
    merged["throughput"] = merged.get("wall_tokens_per_second" if wall else "tokens_per_second")
    return {key: _num(merged.get(key)) for key, *_ in KPIS}


def cards(run: dict[str, Any], baseline: dict[str, Any] | None) -> list[dict[str, Any]]:
    """[{key, label, value (text), raw, delta (text or None), delta_color}] for `st.metric`."""
    wall = has_wall(run) and (baseline is None or has_wall(baseline))  # a delta never mixes the two figures
    mine, theirs = values(run, wall), values(baseline, wall) if baseline else {}
    out = []
    for key, label, fmt, higher in KPIS:
        v = mine[key]
        b = theirs.get(key) if baseline else None
        delta = None
        if v is not None and b is not None:
            d = v - b
            delta = ("+" if d >= 0 else "") + fmt.format(d)
            if key == "throughput" and b:
                delta += f" ({v / b:.2f}x)"
        out.append(
            {
                "key": key,
                "label": label,
                "value": "–" if v is None else fmt.format(v),
                "raw": v,
                "delta": delta,
                "delta_color": "normal" if higher else "inverse",
            }
        )
    return out
