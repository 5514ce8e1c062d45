"""KPI cards: a run's headline numbers and their deltas against a baseline run."""

from __future__ import annotations

import math
from typing import Any

from cascade.store.queries import speed_key

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


def values(detail: dict[str, Any], key: str | None = None) -> dict[str, float | None]:
    """The KPI values of a `run_detail` result. Its throughput is the tok/s `key` names (default: its wall-clock
    throughput when recorded, else the per-row figure; `cascade.store.queries.speed_key`)."""
    merged = {**detail["totals"], **detail["quality"]}
    merged["throughput"] = merged.get(key or speed_key(detail["totals"]))
    return {key: _num(merged.get(key)) for key, *_ in KPIS}


def cards(run: dict[str, Any], baseline: dict[str, Any] | None) -> list[dict[str, Any]]:
    """[{key, label, value (text), raw, delta (text or None), delta_color}] for `st.metric`."""
    speed = speed_key(run["totals"], baseline["totals"] if baseline else None)  # a delta never mixes the two
    mine, theirs = values(run, speed), values(baseline, speed) if baseline else {}
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
