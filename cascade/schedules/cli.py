"""`cascade profile POLICY`: show, re-measure and calibrate the cost table the adaptive schedule uses.

cascade profile policies/x.yaml                    # the cached table (measured now if absent)
cascade profile policies/x.yaml --remeasure        # time the models again
cascade profile policies/x.yaml --calibrate --runs 12,13 [--store URL]
                                                   # fit per-position temperatures of the drafter's
                                                   # confidence against those runs' logged acceptance
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cascade.errors import CascadeError
from cascade.tables import format_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure (and calibrate) the cost table of the adaptive schedule")
    p.add_argument("policy", type=Path, help="YAML policy file (its target, drafter, device and dtype)")
    p.add_argument("--max-k", type=int, help="largest block to time (default: the most the schedule drafts)")
    p.add_argument("--remeasure", action="store_true", help="time the models again even if a table is cached")
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="fit per-position temperatures of the drafter's confidence from logged runs",
    )
    p.add_argument(
        "--runs",
        help="comma-separated run ids to calibrate on (default: every run of this "
        "policy's target and drafter in the store)",
    )
    p.add_argument("--store", metavar="URL", help="the store to calibrate from (default: as `cascade run`)")
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads to time with (default: torch's choice; use what the runs will use)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from cascade.decode.engine import Engine
    from cascade.plugins import registry
    from cascade.policy import ScheduleSpec, load_policy, schedule_options
    from cascade.schedules import profile
    from cascade.schedules.costs import fit_temperatures

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    policy = load_policy(args.policy)
    if policy.drafter is None or policy.mode not in ("speculative", "lossy"):
        raise CascadeError(f"{policy.name}: a cost table is for speculative or lossy policies with a drafter")
    # the models as the policy places them; the schedule is not needed to time them
    engine = Engine.from_policy(policy.derive(policy.name, {"decoding": {"schedule": ScheduleSpec()}}))
    schedule = registry().schedule(policy.decoding.schedule.name)
    max_k = args.max_k or schedule.max_draft(schedule_options(policy, schedule))
    if max_k < 1:
        raise CascadeError("--max-k must be at least 1")
    print(f"{policy.name}: cost table for blocks of up to {max_k} drafts", file=sys.stderr)
    table, path, measured = profile.cost_table(engine, max_k, remeasure=args.remeasure)
    report = None
    if args.calibrate:
        rows, runs, url = _logged_acceptance(args, policy)
        temps, report = fit_temperatures(rows, max_k)
        table, path = profile.with_temperatures(engine, table, temps, {"store": url, "runs": runs, "rows": len(rows)})
    out = {
        "path": str(path),
        "measured_now": measured,
        "draft_seconds": table.draft_seconds,
        "step_seconds": table.step_seconds,
        "verify_seconds": list(table.verify_seconds),
        "temperatures": list(table.temperatures),
        "provenance": dict(table.provenance),
        "calibration": report,
    }
    if args.json:
        print(json.dumps(out, indent=1, default=str))
        return 0
    print(
        f"cost table: {path} ({'measured now' if measured else 'cached'}, {table.provenance.get('measured_at', '?')})"
    )
    print(
        f"drafter step: {table.draft_seconds * 1e3:.2f} ms; the loop's own time per step: "
        f"{table.step_seconds * 1e3:.2f} ms"
    )
    temps = list(table.temperatures) + [1.0] * (max_k - len(table.temperatures))
    rows_out = [
        [n, f"{v * 1e3:.2f}", f"{v / table.verify_seconds[0]:.2f}", f"{temps[n - 1]:.3g}" if n <= max_k else ""]
        for n, v in enumerate(table.verify_seconds, start=1)
    ]
    print(format_table(["tokens per call (n)", "target call ms", "v(n)", "temperature of draft n"], rows_out))
    if report is not None:
        print(
            format_table(
                ["position", "drafts", "temperature", "acceptance", "mean max q", "log-loss before", "after"],
                [
                    [
                        r["position"],
                        r["n"],
                        r["temperature"],
                        _f(r.get("acceptance")),
                        _f(r.get("mean_confidence")),
                        _f(r.get("logloss_before")),
                        _f(r.get("logloss_after")),
                    ]
                    for r in report
                ],
            )
        )
    return 0


def _f(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def _logged_acceptance(args: argparse.Namespace, policy) -> tuple[list, list[int], str]:
    from cascade.store import Store, mask_url, queries, resolve_url

    url = resolve_url(args.store, policy=policy)
    if url is None:
        raise CascadeError("no store to calibrate from: give --store URL")
    with Store.open(url, create=False) as store:
        if args.runs:
            try:
                runs = [int(x) for x in args.runs.split(",") if x.strip()]
            except ValueError:
                raise CascadeError(f"--runs takes comma-separated run ids, got {args.runs!r}") from None
        else:
            drafter = policy.drafter.plugin if policy.drafter is not None else None
            runs = [
                r["id"]
                for r in queries.list_runs(store, limit=10_000)
                if r["target"] == policy.target.model
                and r["drafter"] == drafter
                and r["mode"] in ("speculative", "lossy")
            ]
        rows = queries.draft_acceptance(store, runs)
    if not rows:
        raise CascadeError(
            f"no logged drafts with the drafter's confidence in runs {runs or '(none)'} of "
            f"{mask_url(url)}: run the policy with the store on first (`cascade run`)"
        )
    return rows, runs, mask_url(url)
