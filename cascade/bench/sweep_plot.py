"""A sweep's outputs: `sweep.csv` (one row per point), `sweep.json` (`SweepResult.to_dict`) and
`sweep.png`: chrF against speed-up and against target calls per token, the Pareto frontier
marked, a guide at 99% of target-only's chrF and one at each curve's crossing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from cascade.bench.sweep import QUALITY_TOLERANCE, SweepResult
from cascade.tables import is_missing

CSV_FIELDS = (
    "curve", "role", "policy", "mode", "rule", "knob", "value", "tokens_per_second", "tokens_per_second_min",
    "tokens_per_second_max", "speedup", "chrf", "chrf_rel", "target_logprob", "target_logprob_delta",
    "target_calls_per_token", "drafter_calls_per_token", "tau", "acceptance_rate", "deferral_rate",
    "pareto_speedup", "pareto_calls", "run_id",
)


def write_outputs(result: SweepResult, out_dir: Path, title: str | None = None) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "sweep.csv", "json": out_dir / "sweep.json", "png": out_dir / "sweep.png"}
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for p in result.points:
            w.writerow({k: ("" if is_missing(v) else v) for k, v in p.items()})
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plot(result, paths["png"], title)
    return paths


def plot(result: SweepResult, path: Path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 6), constrained_layout=True)
    panels = [("speedup", "speed-up over target-only (tokens/s, same process)", True, "speedup_within_1pct",
               "pareto_speedup"),
              ("target_calls_per_token", "target calls per emitted token", False,
               "target_calls_per_token_within_1pct", "pareto_calls")]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    curve_color = {c["curve"]: colors[i % len(colors)] for i, c in enumerate(result.curves)}
    threshold = result.summary["quality_threshold"]
    for ax, (xkey, xlabel, maximize, cross_key, front_key) in zip(axes, panels):
        for c in result.curves:
            pts = [p for p in result.points if p["curve"] == c["curve"]]
            order = {v: i for i, v in enumerate(c["values"])}
            pts.sort(key=lambda p: order.get(p["value"], 0))
            xs = [p[xkey] for p in pts]
            ys = [p["chrf"] for p in pts]
            role = c["role"]
            style = {"rule": dict(marker="o", linestyle="-"), "baseline": dict(marker="s", linestyle="--"),
                     "reference": dict(marker="*", linestyle="none", markersize=14)}[role]
            label = c["curve"] + (f" ({c['knob']} swept)" if c["knob"] else "")
            ax.plot(xs, ys, color=curve_color[c["curve"]], label=label, **style)
            if c["knob"]:
                sym = "α" if c["knob"] == "alpha" else "l"
                for p in pts:
                    if not (is_missing(p[xkey]) or is_missing(p["chrf"])):
                        ax.annotate(f"{sym}={p['value']:.3g}", (p[xkey], p["chrf"]), textcoords="offset points",
                                    xytext=(4, 4), fontsize=7, color=curve_color[c["curve"]])
            x_cross = c[cross_key]
            if c["knob"] and not is_missing(x_cross):
                ax.axvline(x_cross, color=curve_color[c["curve"]], linestyle=":", linewidth=1)
                ax.annotate(f"{x_cross:.2f}", (x_cross, threshold), textcoords="offset points", xytext=(3, -12),
                            fontsize=8, color=curve_color[c["curve"]])
        front = [p for p in result.points if p[front_key]]
        front.sort(key=lambda p: p[xkey])
        if front:
            ax.step([p[xkey] for p in front], [p["chrf"] for p in front], where="pre" if maximize else "post",
                    color="black", linewidth=1, alpha=0.6, label="Pareto frontier")
            ax.scatter([p[xkey] for p in front], [p["chrf"] for p in front], s=140, facecolors="none",
                       edgecolors="black", linewidths=1.2, zorder=5)
        if not is_missing(threshold):
            ax.axhline(threshold, color="gray", linestyle="--", linewidth=1,
                       label=f"chrF within {QUALITY_TOLERANCE:.0%} of target-only ({threshold:.1f})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("chrF vs reference")
        ax.grid(True, alpha=0.3)
        if not maximize:
            ax.invert_xaxis()  # fewer target calls is better: the good corner stays top-right
    axes[0].legend(fontsize=8, loc="best")
    m = result.meta.get("machine", {})
    device = m.get("cuda") or f"CPU ({m.get('torch_threads')} threads)"
    fig.suptitle(title or f"speed/quality trade-off: {result.meta.get('n_prompts')} prompts, {device}", fontsize=11)
    fig.savefig(path, dpi=120)
    plt.close(fig)
