"""`cascade db upgrade|current|history` and `cascade runs list|show ID`, as tables or `--json`.

Wire into the main parser with `add_parser(subparsers)`; each command sets `func(args) -> int`
and raises CascadeError for what the user can fix. Every command takes `--store URL`
(default: `CASCADE_STORE`, else cascade.db in the per-user folder: `cascade.store.urls`).
"""

from __future__ import annotations

import argparse
import json

from cascade.store.urls import resolve_url
from cascade.tables import fmt, format_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    store_help = "store URL (default: $CASCADE_STORE, else cascade.db in $CASCADE_HOME or the user data folder)"

    dbp = sub.add_parser("db", help="the decision store's schema: upgrade, current, history")
    dsub = dbp.add_subparsers(dest="db_cmd", required=True)
    up = dsub.add_parser("upgrade", help="migrate the store to the newest schema (creates it if empty)")
    up.add_argument("--store", metavar="URL", help=store_help)
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    up.set_defaults(func=cmd_db_upgrade)
    cur = dsub.add_parser("current", help="the store's schema revision")
    cur.add_argument("--store", metavar="URL", help=store_help)
    cur.add_argument("--json", action="store_true", help="print JSON: store, revision, head, up_to_date")
    cur.set_defaults(func=cmd_db_current)
    hist = dsub.add_parser("history", help="the schema revisions this cascade knows, newest first")
    hist.add_argument("--json", action="store_true", help="print JSON: one object per revision")
    hist.set_defaults(func=cmd_db_history)

    runs = sub.add_parser("runs", help="logged runs: list, show")
    rsub = runs.add_subparsers(dest="runs_cmd", required=True)
    ls = rsub.add_parser("list", help="the newest runs with their totals")
    ls.add_argument("--store", metavar="URL", help=store_help)
    ls.add_argument("--limit", type=int, default=20, help="show at most this many runs, newest first (default: 20)")
    ls.add_argument("--status", choices=["running", "done", "failed", "interrupted"], help="only runs with this status")
    ls.add_argument("--json", action="store_true", help="print JSON: one object per run")
    ls.set_defaults(func=cmd_runs_list)
    show = rsub.add_parser("show", help="one run: totals, per-position acceptance, deferral rate")
    show.add_argument("run_id", type=int, metavar="ID", help="the run's id (as `cascade runs list` shows it)")
    show.add_argument("--store", metavar="URL", help=store_help)
    show.add_argument("--json", action="store_true", help="print JSON: run, totals, rows, per-position acceptance")
    show.set_defaults(func=cmd_runs_show)


def _url(args: argparse.Namespace) -> str:
    url = resolve_url(args.store)
    assert url is not None
    return url


# ---------------------------------------------------------------------- db


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from cascade.store import db, migrate

    url = _url(args)
    before, after = migrate.upgrade(url, args.revision)
    where = db.mask_url(url)
    print(f"{where}: already at {after}" if before == after else f"{where}: upgraded {before or '(empty)'} -> {after}")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from cascade.store import db, migrate

    url = _url(args)
    rev = migrate.current(url)
    head = migrate.head()
    if args.json:
        print(json.dumps({"store": db.mask_url(url), "revision": rev, "head": head, "up_to_date": rev == head}))
    else:
        state = "(head)" if rev == head else f"(head is {head}: run `cascade db upgrade`)"
        print(f"{rev or '(empty)'} {state}")
    return 0


def cmd_db_history(args: argparse.Namespace) -> int:
    from cascade.store import migrate

    revs = migrate.history()
    if args.json:
        print(json.dumps(revs, indent=2))
    else:
        print(
            format_table(
                ["revision", "down", "message"],
                [
                    [r["revision"] + (" (head)" if r["is_head"] else ""), r["down_revision"] or "", r["message"]]
                    for r in revs
                ],
            )
        )
    return 0


# ---------------------------------------------------------------------- runs


def cmd_runs_list(args: argparse.Namespace) -> int:
    from cascade.store import Store, queries

    with Store.open(_url(args), create=False) as store:
        runs = queries.list_runs(store, limit=args.limit, status=args.status)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    print(
        format_table(
            [
                "id",
                "status",
                "policy",
                "mode",
                "rule",
                "alpha",
                "seqs",
                "tokens",
                "accept",
                "tau",
                "defer",
                "tok/s",
                "started",
            ],
            [
                [
                    r["id"],
                    r["status"],
                    r["policy_name"],
                    r["mode"],
                    r["rule"],
                    fmt(r["alpha"], ".3f"),
                    r["num_sequences"],
                    r["num_generated_tokens"],
                    fmt(r["acceptance_rate"], ".3f"),
                    fmt(r["mean_acceptance_length"], ".3f"),
                    fmt(r["deferral_rate"], ".3f"),
                    fmt(queries.throughput(r), ".1f"),
                    (r["started_at"] or "")[:19],
                ]
                for r in runs
            ],
        )
    )
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from cascade.store import Store, queries

    with Store.open(_url(args), create=False) as store:
        out = queries.show_run(store, args.run_id)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    run, t = out["run"], out["totals"]
    facts = [
        ("run", f"{run['id']}  {run['status']}" + (f"  ({run['error']})" if run["error"] else "")),
        ("policy", f"{run['policy_name']}  sha256 {run['policy_sha256'][:12]}"),
        (
            "mode / rule",
            (
                f"{run['mode']}  {run['rule']}  alpha={fmt(run['alpha'], '.3f')}  "
                f"T={fmt(run['temperature'], '.3f')}  block={run['block_size']}"
            ),
        ),
        ("target", run["target"]),
        ("drafter", run["drafter"] or "-"),
        ("device", f"{run['device'] or '?'}  {run['dtype'] or ''}".rstrip()),
        ("started", f"{run['started_at']}  finished {run['finished_at'] or '-'}"),
        (
            "sequences",
            (
                f"{out['rows']['finished_sequences']} finished of {out['rows']['sequences']}, "
                f"{out['rows']['steps']} steps"
            ),
        ),
        ("tokens", f"{t['num_generated_tokens']} generated, {t['num_prompt_tokens']} prompt"),
        ("drafts", f"{t['num_drafts']} steps, {t['num_draft_tokens']} drafted, {t['num_accepted_tokens']} accepted"),
        ("acceptance", f"{fmt(t['acceptance_rate'], '.3f')}  tau={fmt(t['mean_acceptance_length'], '.3f')}"),
        ("deferral rate", fmt(out["deferral_rate"], ".3f")),
        (
            "calls/token",
            f"target {fmt(t['target_calls_per_token'], '.3f')}  drafter {fmt(t['drafter_calls_per_token'], '.3f')}",
        ),
        (
            "speed",
            f"{fmt(queries.throughput(t), '.1f')} tok/s over "
            f"{fmt(t.get('wall_seconds') or t['decode_seconds'], '.2f')} s"
            + (
                f" wall clock (per row: {fmt(t['tokens_per_second'], '.1f')} tok/s over "
                f"{fmt(t['decode_seconds'], '.2f')} s summed)"
                if t.get("wall_seconds")
                else ""
            ),
        ),
    ]
    width = max(len(k) for k, _ in facts)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in facts))
    if out["per_position"]:
        print()
        print(
            format_table(
                ["position", "drafted", "accepted", "deferred", "acceptance"],
                [
                    [p["position"], p["drafted"], p["accepted"], p["deferred"], fmt(p["acceptance_rate"], ".3f")]
                    for p in out["per_position"]
                ],
            )
        )
    return 0
