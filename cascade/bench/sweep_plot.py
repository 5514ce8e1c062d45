"""A sweep's outputs: `sweep.csv` (one row per point), `sweep.json` (`SweepResult.to_dict`) and
`sweep.png`: the quality axis (`sweep_analysis.QUALITY_METRIC`, mean over prompts with a vertical bar
for its 95% interval) against speed-up and against target calls per token.

Every line in the plot has an entry in the legend below it: one per curve (its knob
named), the Pareto frontier (a step line through the circled points), the guide at 99%
of target-only's quality, and a diamond on that guide where each swept curve crosses it
(the best x of that curve within 1%; the number beside it is that x, as in the
summary table). Points carry their knob value ("α=0.4"); labels are placed greedily in
display coordinates (frontier points first, then the crossings, then the rest), each at
the first of a ring of offsets around its point that overlaps no other label, no point
and stays inside the axes; a label with no free place is left out (sweep.csv has every
value).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from cascade.bench.sweep_analysis import QUALITY_LABEL, QUALITY_TOLERANCE, SweepResult
from cascade.tables import is_missing

CSV_FIELDS = (
    "curve",
    "role",
    "policy",
    "mode",
    "rule",
    "knob",
    "value",
    "tokens_per_second",
    "tokens_per_second_min",
    "tokens_per_second_max",
    "speedup",
    "quality",
    "quality_low",
    "quality_high",
    "quality_delta",
    "quality_delta_low",
    "quality_delta_high",
    "exact_match",
    "edit_similarity_lines",
    "parses",
    "distinct_2",
    "repeat_4",
    "seeds",
    "chrf",
    "chrf_rel",
    "target_logprob",
    "target_logprob_delta",
    "target_calls_per_token",
    "drafter_calls_per_token",
    "tau",
    "acceptance_rate",
    "deferral_rate",
    "pareto_speedup",
    "pareto_calls",
    "run_id",
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


ROLE_STYLE = {
    "rule": dict(marker="o", linestyle="-"),
    "baseline": dict(marker="s", linestyle="--"),
    "reference": dict(marker="*", linestyle="none", markersize=14),
}
CROSSING_LABEL = "where a swept curve crosses the 1% line (its best x within 1%)"
FRONTIER_LABEL = "Pareto frontier (circled points)"
INTERVAL_LABEL = "95% interval of a point's mean quality (bootstrap over prompts)"
DPI = 120


def plot(result: SweepResult, path: Path, title: str | None = None) -> None:
    import matplotlib.pyplot as plt

    fig = figure(result, title)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def figure(result: SweepResult, title: str | None = None):
    """The two panels as a matplotlib Figure, laid out and labelled (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(14, 7), dpi=DPI, layout="constrained")
    panels = [
        (
            "speedup",
            "speed-up over target-only (tokens/s, same process)",
            True,
            "speedup_within_1pct",
            "pareto_speedup",
            "{:.2f}x",
        ),
        (
            "target_calls_per_token",
            "target calls per emitted token",
            False,
            "target_calls_per_token_within_1pct",
            "pareto_calls",
            "{:.2f}",
        ),
    ]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    curve_color = {c["curve"]: colors[i % len(colors)] for i, c in enumerate(result.curves)}
    threshold = result.summary["quality_threshold"]
    legend: dict[str, object] = {}  # label -> handle, in order of appearance
    labels: list[list[tuple]] = [[], []]  # per panel: (priority, x, y, text, color)
    for ax, panel_labels, (xkey, xlabel, maximize, cross_key, front_key, xfmt) in zip(axes, labels, panels):
        for c in result.curves:
            pts = [p for p in result.points if p["curve"] == c["curve"]]
            order = {v: i for i, v in enumerate(c["values"])}
            pts.sort(key=lambda p: order.get(p["value"], 0))
            color = curve_color[c["curve"]]
            label = c["curve"] + (f" ({c['knob']} swept)" if c["knob"] else "")
            (line,) = ax.plot(
                [_num(p[xkey]) for p in pts],
                [_num(p["quality"]) for p in pts],
                color=color,
                label=label,
                **ROLE_STYLE[c["role"]],
            )
            legend.setdefault(label, line)
            bars = [p for p in pts if not any(is_missing(p.get(k)) for k in (xkey, "quality_low", "quality_high"))]
            if bars:  # the 95% interval of each point's mean quality
                ax.vlines(
                    [p[xkey] for p in bars],
                    [p["quality_low"] for p in bars],
                    [p["quality_high"] for p in bars],
                    color=color,
                    alpha=0.35,
                    linewidth=2,
                )
                legend.setdefault(INTERVAL_LABEL, Line2D([], [], color="gray", alpha=0.5, linewidth=2))
            if c["knob"]:
                sym = "α" if c["knob"] == "alpha" else "l"
                for i, p in enumerate(pts):
                    if not (is_missing(p[xkey]) or is_missing(p["quality"])):
                        prio = 0 if p[front_key] else (2 if i in (0, len(pts) - 1) else 3)
                        panel_labels.append((prio, p[xkey], p["quality"], f"{sym}={p['value']:.3g}", color))
            x_cross = c[cross_key]
            if c["knob"] and not is_missing(x_cross) and not is_missing(threshold):
                ax.plot(
                    [x_cross],
                    [threshold],
                    marker="D",
                    markersize=7,
                    color=color,
                    markeredgecolor="black",
                    linestyle="none",
                    label=CROSSING_LABEL,
                    zorder=6,
                )
                panel_labels.append((1, x_cross, threshold, xfmt.format(x_cross), color))
        front = sorted((p for p in result.points if p[front_key]), key=lambda p: p[xkey])
        if front:
            (line,) = ax.plot(
                [p[xkey] for p in front],
                [p["quality"] for p in front],
                drawstyle="steps-pre" if maximize else "steps-post",
                color="black",
                linewidth=1,
                alpha=0.6,
                marker="o",
                markersize=13,
                markerfacecolor="none",
                markeredgewidth=1.2,
                label=FRONTIER_LABEL,
                zorder=5,
            )
            legend.setdefault(FRONTIER_LABEL, line)
        if not is_missing(threshold):
            line = ax.axhline(
                threshold,
                color="gray",
                linestyle="--",
                linewidth=1,
                label=f"within {QUALITY_TOLERANCE:.0%} of target-only ({threshold:.1f})",
            )
            legend.setdefault(line.get_label(), line)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(QUALITY_LABEL)
        ax.grid(True, alpha=0.3)
        ax.margins(0.08)
        if not maximize:
            ax.invert_xaxis()  # fewer target calls is better: the good corner stays top-right
    if any(line.get_label() == CROSSING_LABEL for ax in axes for line in ax.get_lines()):
        legend[CROSSING_LABEL] = Line2D([], [], marker="D", color="gray", markeredgecolor="black", linestyle="none")
    fig.legend(list(legend.values()), list(legend.keys()), loc="outside lower center", ncols=3, fontsize=8)
    m = result.meta.get("machine", {})
    device = m.get("cuda") or f"CPU ({m.get('torch_threads')} threads)"
    seeds = result.meta.get("seeds") or 1
    temps = sorted({p["temperature"] for p in result.points if p.get("temperature") is not None})
    at = f", T = {'/'.join(f'{t:g}' for t in temps)}" if temps else ""
    fig.suptitle(
        title
        or f"speed/quality trade-off: {result.meta.get('n_prompts')} prompts"
        + (f" × {seeds} seeds" if seeds > 1 else "")
        + f"{at}, {device}",
        fontsize=11,
    )
    fig.canvas.draw()  # lay out once (legend, titles), then freeze it so the labels placed below stay put
    fig.set_layout_engine("none")
    for ax in axes:
        ax.set_autoscale_on(False)
    renderer = fig.canvas.get_renderer()
    for ax, panel_labels in zip(axes, labels):
        place_labels(ax, panel_labels, renderer)
    return fig


def _num(x):
    return float("nan") if x is None else x


# ring offsets (points) around a point, nearest first: (dx, dy, horizontal, vertical alignment)
_DIRECTIONS = (
    (1, 1, "left", "bottom"),
    (1, -1, "left", "top"),
    (-1, 1, "right", "bottom"),
    (-1, -1, "right", "top"),
    (0, 1, "center", "bottom"),
    (0, -1, "center", "top"),
    (1, 0, "left", "center"),
    (-1, 0, "right", "center"),
)
OFFSETS = tuple((dx * r, dy * r, ha, va) for r in (6, 11, 17, 24) for dx, dy, ha, va in _DIRECTIONS)
MARKER_PAD = 0.5  # points added around a marker's half size: the box around a data point no label may cover


def place_labels(ax, requests, renderer, fontsize: float = 7) -> list:
    """Annotate (priority, x, y, text, color) requests without overlaps; returns the annotations placed.

    Greedy, in display coordinates: by priority, each label takes the first offset in `OFFSETS`
    whose box lies inside the axes and overlaps neither a label already placed nor any data point
    of the axes (its marker's box); a label with no such offset is left out.
    """
    from matplotlib.transforms import Bbox

    frame = ax.get_window_extent(renderer)
    to_px = ax.figure.dpi / 72.0
    obstacles = []
    for line in ax.get_lines():
        if line.get_marker() in (None, "None", "", " "):
            continue
        half = (line.get_markersize() / 2 + MARKER_PAD) * to_px
        for px, py in line.get_transform().transform(line.get_xydata()):
            if px == px and py == py:  # NaN-free
                obstacles.append(Bbox.from_extents(px - half, py - half, px + half, py + half))
    placed_boxes, placed = [], []
    for _, x, y, text, color in sorted(requests, key=lambda r: r[0]):
        for dx, dy, ha, va in OFFSETS:
            ann = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=fontsize,
                color=color,
                annotation_clip=False,
            )
            ann.set_in_layout(False)
            box = ann.get_window_extent(renderer).padded(1.0)
            inside = box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1
            if (
                inside
                and not any(box.overlaps(b) for b in placed_boxes)
                and not any(box.overlaps(o) for o in obstacles)
            ):
                placed_boxes.append(box)
                placed.append(ann)
                break
            ann.remove()
    return placed
