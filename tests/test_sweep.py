"""`cascade sweep`: α grids, the Pareto frontier and crossings on synthetic points, CSV/JSON/PNG end to end."""

import csv
import json
import math
import re

import pytest

from cascade.bench import sweep, sweep_analysis
from cascade.cli import main as cascade_main
from cascade.errors import CascadeError
from cascade.policy import load_policy
from cascade.testing import policy_dict, write_policy


def test_pareto_front_on_synthetic_points():
    #        0     1      2      3      4      5      6
    xs = [1.0, 2.0, 1.5, 1.2, 2.0, 0.5, math.nan]
    ys = [50.0, 45.0, 48.0, 40.0, 44.0, 51.0, 99.0]
    # 3 is dominated by 0 and 2; 4 by 1 (same x, lower y); 6 is NaN
    assert sweep_analysis.pareto_front(xs, ys) == [5, 0, 2, 1]
    # fewer target calls is better: minimize x
    calls = [0.5, 0.2, 0.3, 0.9, 0.2, 1.0, math.nan]
    assert sweep_analysis.pareto_front(calls, ys, maximize_x=False) == [1, 2, 0, 5]
    # duplicates of a frontier point are both kept; a single point is its own frontier
    assert sweep_analysis.pareto_front([1.0, 1.0], [2.0, 2.0]) == [0, 1]
    assert sweep_analysis.pareto_front([3.0], [1.0]) == [0]


def test_pareto_front_brute_force_agrees():
    import random

    rng = random.Random(0)
    for _ in range(20):
        pts = [(rng.random(), rng.random()) for _ in range(15)]
        front = set(sweep_analysis.pareto_front([p[0] for p in pts], [p[1] for p in pts]))
        for i, (x, y) in enumerate(pts):
            dominated = any(a >= x and b >= y and (a, b) != (x, y) for a, b in pts)
            assert (i in front) == (not dominated)


def test_crossing_interpolates_at_the_quality_threshold():
    # speed-up grows, quality falls as α goes from the speculative to the drafter end
    curve = [(1.2, 50.0), (1.5, 49.8), (1.9, 48.0), (2.5, 40.0)]
    thr = 0.99 * 50.0  # 49.5
    # between (1.5, 49.8) and (1.9, 48.0): t = (49.5 - 49.8) / (48.0 - 49.8) = 1/6
    assert sweep_analysis.crossing(curve, thr) == pytest.approx(1.5 + (1.9 - 1.5) / 6)
    assert sweep_analysis.crossing([(1.0, 10.0)], thr) != sweep_analysis.crossing(
        [(1.0, 10.0)], thr
    )  # NaN: never reaches it
    calls = [(1.0, 50.0), (0.6, 49.9), (0.3, 45.0)]
    assert sweep_analysis.crossing(calls, thr, maximize=False) == pytest.approx(0.6 - 0.3 * (0.4 / 4.9))


def test_alpha_and_lenience_grids():
    assert sweep.alpha_grid("token_v3", (0.0, 1.0), 5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert sweep.alpha_grid("diff", (-1.0, 1.0), 3) == [-1.0, 0.0, 1.0]
    opt = sweep.alpha_grid("opt", (-math.inf, math.inf), 8)
    assert opt[0] == -2.0 and opt[-1] == 5.0 and len(opt) == 8
    assert sweep.lenience_grid(5) == [1.0, 0.8, 0.6, 0.4, 0.2]
    assert sweep.parse_values("0, 0.3,0.6") == [0.0, 0.3, 0.6]
    with pytest.raises(CascadeError):
        sweep.parse_values("a,b")


@pytest.fixture(scope="module")
def v3_policy(family, tmp_path_factory):
    f = family("gpt2")
    d = tmp_path_factory.mktemp("sweep")
    p = policy_dict(f["target"], f["near"], rule="token_v3", alpha=0.3, ignore_eos=True, max_new_tokens=8)
    p["name"] = "v3"
    return write_policy(d / "v3.yaml", **p)


def test_plan_curves_adds_the_baselines(v3_policy, family, tmp_path):
    curves = sweep.plan_curves([load_policy(v3_policy)], n=3)
    assert [(c.label, c.role, c.knob) for c in curves] == [
        ("target-only", "reference", None),
        ("v3", "rule", "alpha"),
        ("speculative-lossless", "reference", None),
        ("sequential-chow", "baseline", "alpha"),
        ("lossy-speculative", "baseline", "lenience"),
    ]
    assert curves[1].values == [0.0, 0.5, 1.0]
    assert [p.rule.alpha for p in curves[1].policies] == [0.0, 0.5, 1.0]
    assert [p.decoding.lenience for p in curves[4].policies] == [1.0, 0.667, 0.333]
    # explicit α: each rule keeps the values inside its range (chow: [0, 1])
    curves = sweep.plan_curves([load_policy(v3_policy)], alphas=[-0.5, 0.2, 0.9])
    assert curves[1].values == [0.2, 0.9] and curves[3].values == [0.2, 0.9]
    with pytest.raises(CascadeError, match="range"):
        sweep.plan_curves([load_policy(v3_policy)], alphas=[7.0])
    # a deterministic drafter only: no sequential/lossy baseline can be built from it
    ngram = write_policy(tmp_path / "ng.yaml", **policy_dict(family("gpt2")["target"], plugin="ngram", rule="token_v3"))
    assert [c.label for c in sweep.plan_curves([load_policy(ngram)], n=2)] == [
        "target-only",
        "test-speculative-token_v3",
    ]


def test_sweep_writes_csv_json_png(v3_policy, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "def add(a, b):\n", "reference": "    return a + b\n"}) + "\n")
    out = tmp_path / "out"
    rc = cascade_main(
        [
            "sweep",
            str(v3_policy),
            "--alphas",
            "2",
            "--prompts",
            str(prompts),
            "--no-store",
            "--no-progress",
            "--warmup",
            "0",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr()
    assert "speed-up @1%" in printed.out
    # the plan and an estimate up front (stderr), even without the progress bar
    eta = re.search(
        r"sweep: 8 points × \(0 warm-up \+ 1 prompt × \(1 recorded \+ 1 timed\)\) = 16 generations; "
        r"about (\d+ s|\d+ min|\d+ h \d+ min) on this machine \(the first took [\d.]+ s",
        printed.err,
    )
    assert eta, printed.err
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    # target-only, v3 x2, lossless, sequential x2, lossy x2
    assert len(rows) == 8
    assert {r["curve"] for r in rows} == {
        "target-only",
        "v3",
        "speculative-lossless",
        "sequential-chow",
        "lossy-speculative",
    }
    target = next(r for r in rows if r["mode"] == "target")
    assert float(target["speedup"]) == pytest.approx(1.0) and float(target["chrf_rel"]) == pytest.approx(1.0)
    data = json.loads((out / "sweep.json").read_text())
    assert set(data) == {"meta", "summary", "curves", "points"} and len(data["points"]) == 8
    assert data["summary"]["quality_threshold"] == pytest.approx(0.99 * data["summary"]["target_only_quality"])
    # the flagged frontier is exactly the non-dominated set
    pts = data["points"]
    for p in pts:
        dominated = any(
            q["speedup"] >= p["speedup"]
            and q["quality"] >= p["quality"]
            and (q["speedup"] > p["speedup"] or q["quality"] > p["quality"])
            for q in pts
        )
        assert p["pareto_speedup"] == (not dominated)
    png = (out / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def synthetic_sweep(seed: int = 0) -> sweep_analysis.SweepResult:
    """Six curves whose low-α ends pile up near (1.0x, chrF 14.4), as in a real sweep, plus references."""
    import random

    rng = random.Random(seed)
    points, curves = [], []
    specs = [
        ("v3", "rule", "alpha"),
        ("opt", "rule", "alpha"),
        ("diff", "rule", "alpha"),
        ("chow", "rule", "alpha"),
        ("sequential-chow", "baseline", "alpha"),
        ("lossy", "baseline", "lenience"),
    ]
    points.append(
        {
            "curve": "target-only",
            "role": "reference",
            "knob": None,
            "value": None,
            "mode": "target",
            "speedup": 1.0,
            "quality": 14.4,
            "target_calls_per_token": 1.0,
        }
    )
    curves.append({"curve": "target-only", "role": "reference", "knob": None, "values": [None]})
    for j, (name, role, knob) in enumerate(specs):
        values = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        for v in values:
            cluster = v <= 0.4  # the low-α points of every curve land within a hair of each other
            speed = 1.0 + 0.01 * rng.random() if cluster else 1.0 + v * (1 + 0.3 * j)
            quality = 14.4 + 0.02 * rng.random() if cluster else 14.4 - 3 * (v - 0.4) - 0.2 * j
            calls = 0.55 + 0.005 * rng.random() if cluster else 0.55 - 0.4 * v + 0.02 * j
            points.append(
                {
                    "curve": name,
                    "role": role,
                    "knob": knob,
                    "value": v,
                    "mode": "speculative",
                    "speedup": speed,
                    "quality": quality,
                    "target_calls_per_token": calls,
                }
            )
        curves.append({"curve": name, "role": role, "knob": knob, "values": values})
    points.append(
        {
            "curve": "lossless",
            "role": "reference",
            "knob": None,
            "value": None,
            "mode": "speculative",
            "speedup": 1.004,
            "quality": 14.41,
            "target_calls_per_token": 0.552,
        }
    )
    curves.append({"curve": "lossless", "role": "reference", "knob": None, "values": [None]})
    threshold = 0.99 * 14.4
    for front_key, xkey, maximize in (
        ("pareto_speedup", "speedup", True),
        ("pareto_calls", "target_calls_per_token", False),
    ):
        front = set(
            sweep_analysis.pareto_front([p[xkey] for p in points], [p["quality"] for p in points], maximize, True)
        )
        for i, p in enumerate(points):
            p[front_key] = i in front
    for c in curves:
        mine = [p for p in points if p["curve"] == c["curve"]]
        c["speedup_within_1pct"] = sweep_analysis.crossing([(p["speedup"], p["quality"]) for p in mine], threshold)
        c["target_calls_per_token_within_1pct"] = sweep_analysis.crossing(
            [(p["target_calls_per_token"], p["quality"]) for p in mine], threshold, maximize=False
        )
    summary = {"target_only_quality": 14.4, "quality_threshold": threshold}
    return sweep_analysis.SweepResult(points, curves, summary, {"n_prompts": 3, "machine": {"torch_threads": 2}})


def test_plot_labels_do_not_overlap_and_every_line_is_in_the_legend(tmp_path):
    import matplotlib.pyplot as plt

    from cascade.bench import sweep_plot

    result = synthetic_sweep()
    fig = sweep_plot.figure(result)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legend_labels = {t.get_text() for t in fig.legends[0].get_texts()}
        for ax in fig.axes:
            lines = ax.get_lines()
            assert len(lines) >= len(result.curves) + 2  # curves, frontier, 1% guide (+ crossings)
            for line in lines:
                assert not line.get_label().startswith("_"), line
                assert line.get_label() in legend_labels, line.get_label()
            # the crossings are marked on the 1% guide and explained in the legend
            assert any(line.get_label() == sweep_plot.CROSSING_LABEL for line in lines)
            texts = [t for t in ax.texts if t.get_visible()]
            assert len(texts) >= 12  # the cluster's labels are not all dropped
            boxes = [t.get_window_extent(renderer) for t in texts]
            frame = ax.get_window_extent(renderer)
            for i, a in enumerate(boxes):
                assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
                for j in range(i):
                    assert not a.overlaps(boxes[j]), (texts[i].get_text(), texts[j].get_text())
        # every frontier point of a swept curve is labelled in its panel (frontier labels are placed first)
        for ax, front_key, xkey in zip(
            fig.axes, ("pareto_speedup", "pareto_calls"), ("speedup", "target_calls_per_token")
        ):
            labelled = {tuple(t.xy) for t in ax.texts if t.get_visible()}
            front = [p for p in result.points if p[front_key] and p["knob"]]
            assert front and all((p[xkey], p["quality"]) in labelled for p in front)
        assert {c["curve"] + (f" ({c['knob']} swept)" if c["knob"] else "") for c in result.curves} <= legend_labels
        assert sweep_plot.FRONTIER_LABEL in legend_labels and sweep_plot.CROSSING_LABEL in legend_labels
    finally:
        plt.close(fig)
    # the PNG written is the same figure
    out = tmp_path / "s.png"
    sweep_plot.plot(result, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _pt(curve, value, quality, parses, calls, speed, mode="speculative", role="rule", knob="alpha"):
    return {
        "curve": curve,
        "role": role,
        "knob": knob,
        "value": value,
        "mode": mode,
        "rule": "token_v3",
        "policy": f"{curve}@{value}",
        "temperature": 0.0,
        "quality": quality,
        "parses": parses,
        "target_calls_per_token": calls,
        "speedup": speed,
    }


def test_within_1pct_needs_the_quality_and_the_parse_rate_and_ships_the_fewest_calls():
    points = [
        _pt("target-only", None, 20.0, 0.80, 1.0, 1.0, mode="target", role="reference", knob=None),
        _pt("c", 0.0, 20.0, 0.80, 0.50, 0.9),
        _pt("c", 0.5, 19.9, 0.80, 0.40, 1.1),  # within 1% on both: qualifies
        _pt("c", 1.0, 30.0, 0.40, 0.20, 1.6),  # a closer first line, but half the code breaks: does not
    ]
    result = sweep_analysis.analyze(points, {})
    c = next(r for r in result.curves if r["curve"] == "c")
    assert [p["within_1pct"] for p in result.points] == [True, True, True, False]
    assert c["value_within_1pct"] == 0.5 and c["policy_within_1pct"] == "c@0.5"
    assert c["target_calls_per_token_within_1pct"] == pytest.approx(0.40, abs=0.01)
    assert result.summary["guard"] == "parses" and result.summary["guard_floor"] == pytest.approx(0.792)


def test_sweep_from_json_reanalyses_and_replots(tmp_path, capsys):
    points = [
        _pt("target-only", None, 20.0, 0.80, 1.0, 1.0, mode="target", role="reference", knob=None),
        _pt("c", 0.0, 20.0, 0.80, 0.50, 0.9),
        _pt("c", 0.5, 19.9, 0.80, 0.40, 1.1),
        _pt("c", 1.0, 30.0, 0.4, 0.2, 1.6),
    ]
    for p in points:
        p.update(quality_low=p["quality"] - 1, quality_high=p["quality"] + 1)
    src = tmp_path / "old" / "sweep.json"
    src.parent.mkdir()
    src.write_text(json.dumps(sweep_analysis.analyze(points, {"n_prompts": 4}).to_dict()))
    out = tmp_path / "new"
    assert cascade_main(["sweep", "--from", str(src), "--out", str(out)]) == 0
    data = json.loads((out / "sweep.json").read_text())
    assert [c["value_within_1pct"] for c in data["curves"] if c["curve"] == "c"] == [0.5]
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "knob @1%" in capsys.readouterr().out
    assert cascade_main(["sweep", "--from", str(tmp_path / "nothing.json"), "--out", str(out)]) == 2
