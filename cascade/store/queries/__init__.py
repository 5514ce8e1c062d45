"""The read side: every query the CLI, benchmarks and dashboard need, returning plain dicts.

Values are JSON-ready: datetimes as ISO strings, NaN as None. Derived rates use
`cascade.metrics.Metrics`' own definitions, so the store and the engine agree.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.engine import RowMapping

from cascade.errors import CascadeError
from cascade.metrics import DERIVED, Metrics, add_counts
from cascade.policy import VERIFYING_MODES
from cascade.store.db import mask_url
from cascade.store.models import METRIC_COLUMNS, QUALITY_COLUMNS, Calibration, Decision, Run, Sequence, Step
from cascade.store.writer import Store
from cascade.tables import nan_to_none

RUN_SUMMARY = (
    Run.id,
    Run.policy_name,
    Run.mode,
    Run.rule,
    Run.alpha,
    Run.target,
    Run.drafter,
    Run.status,
    Run.started_at,
    Run.finished_at,
    Run.num_sequences,
    Run.wall_seconds,
    *(getattr(Run, c) for c in METRIC_COLUMNS),
    Run.accepted_per_position,
)


def _json(value: Any) -> Any:
    if isinstance(value, datetime):  # SQLite hands back naive datetimes; the store writes UTC
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return nan_to_none(value)


def _row(row: RowMapping) -> dict[str, Any]:
    return {k: _json(v) for k, v in row.items()}


def derived(counters: dict[str, Any]) -> dict[str, float | None]:
    """acceptance_rate, mean_acceptance_length (τ), deferral_rate, tokens_per_second, calls per token; for a run
    (counters with `wall_seconds`) also `wall_tokens_per_second`, its tokens over its wall-clock decoding time.

    `tokens_per_second` is per row: tokens over the sum of the rows' decode times, which overlap in a batch.
    `wall_tokens_per_second` is the run's throughput (None for runs logged before it was recorded)."""
    values: dict[str, Any] = {c: counters[c] or 0 for c in METRIC_COLUMNS}
    m = Metrics(**values)
    out = {name: _json(getattr(m, name)) for name in DERIVED}
    if "wall_seconds" in counters:
        wall = counters["wall_seconds"]
        out["wall_tokens_per_second"] = _json(m.num_generated_tokens / wall) if wall else None
    return out


def throughput(row: dict[str, Any]) -> float | None:
    """A run's tokens per second: wall-clock when recorded, else the per-row figure (runs from before)."""
    return row.get(speed_key(row))


def speed_key(run: dict[str, Any], base: dict[str, Any] | None = None) -> str:
    """Which tok/s compares `run` with `base` (or shows `run` alone): the wall-clock throughput when each has
    one, else the per-row figure for both, so a comparison never mixes the two."""
    both = run.get("wall_tokens_per_second") and (base is None or base.get("wall_tokens_per_second"))
    return "wall_tokens_per_second" if both else "tokens_per_second"


def speed_ratio(run: dict[str, Any], base: dict[str, Any]) -> float | None:
    """`run`'s speed over `base`'s, by `speed_key`."""
    key = speed_key(run, base)
    a, b = run.get(key), base.get(key)
    return a / b if a is not None and b else None


def list_runs(store: Store, *, limit: int = 20, status: str | None = None) -> list[dict[str, Any]]:
    """The newest runs first: identity, status, totals and derived rates."""
    q = select(*RUN_SUMMARY).order_by(Run.id.desc()).limit(limit)
    if status is not None:
        q = q.where(Run.status == status)
    with store.reader.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return [{**_row(r), **derived(dict(r))} for r in rows]


def served_runs(store: Store, deployment: str | None = None) -> list[dict[str, Any]]:
    """Runs logged by `cascade serve` (one per policy and server, or per Ray replica), oldest first: id, policy,
    status, the deployment and replica they were tagged with (None for a single server) and the sequences logged
    so far. `deployment`: only that Ray Serve deployment's runs (its replicas' traffic, taken together)."""
    counts = (
        select(Sequence.run_id, func.count(Sequence.id).label("logged")).group_by(Sequence.run_id).subquery("counts")
    )
    q = (
        select(Run.id, Run.policy_name, Run.status, Run.info, func.coalesce(counts.c.logged, 0).label("logged"))
        .outerjoin(counts, counts.c.run_id == Run.id)
        .order_by(Run.id)
    )
    with store.reader.connect() as conn:
        rows = conn.execute(q).mappings().all()
    out = []
    for r in rows:
        info = r["info"] or {}
        if info.get("source") != "cascade serve" or (deployment is not None and info.get("deployment") != deployment):
            continue
        out.append(
            {
                "id": r["id"],
                "policy_name": r["policy_name"],
                "status": r["status"],
                "deployment": info.get("deployment"),
                "replica": info.get("replica"),
                "sequences": int(r["logged"]),
            }
        )
    return out


def _get_run(conn, run_id: int) -> dict[str, Any]:
    row = conn.execute(select(Run.__table__).where(Run.id == run_id)).mappings().first()
    if row is None:
        raise CascadeError(f"no run {run_id} in store {mask_url(conn.engine.url)}; `cascade runs list` shows the ids")
    return _row(row)


def per_position(conn, run_id: int) -> list[dict[str, Any]]:
    """Drafted, accepted and deferred counts per block position, from the decision rows."""
    q = (
        select(
            Decision.position,
            func.count().label("drafted"),
            func.sum(case((Decision.accepted.is_(True), 1), else_=0)).label("accepted"),
            func.sum(case((Decision.deferred.is_(True), 1), else_=0)).label("deferred"),
        )
        .join(Sequence, Sequence.id == Decision.sequence_id)
        .where(Sequence.run_id == run_id, Decision.kind == "draft")
        .group_by(Decision.position)
        .order_by(Decision.position)
    )
    return [
        {
            "position": r.position,
            "drafted": int(r.drafted),
            "accepted": int(r.accepted),
            "deferred": int(r.deferred),
            "acceptance_rate": r.accepted / r.drafted if r.drafted else None,
        }
        for r in conn.execute(q)
    ]


def show_run(store: Store, run_id: int) -> dict[str, Any]:
    """One run: its row, totals with derived rates, per-position acceptance, deferral rate, row counts,
    and `quality` (its `quality_summary` entry without the run id)."""
    with store.reader.connect() as conn:
        run = _get_run(conn, run_id)
        positions = per_position(conn, run_id)
        seq_count = conn.execute(
            select(func.count(), func.count(Sequence.finished_at)).where(Sequence.run_id == run_id)
        ).one()
        step_count = conn.execute(
            select(func.count())
            .select_from(Step)
            .join(Sequence, Sequence.id == Step.sequence_id)
            .where(Sequence.run_id == run_id)
        ).scalar_one()
        (quality,) = _quality_rows(conn, [run_id])
    totals = {c: run.pop(c) for c in (*METRIC_COLUMNS, "accepted_per_position", "wall_seconds")}
    rates = derived(totals)
    return {
        "run": run,
        "totals": {**totals, **rates},
        "deferral_rate": rates["deferral_rate"],
        "per_position": positions,
        "rows": {"sequences": seq_count[0], "finished_sequences": seq_count[1], "steps": step_count},
        "quality": {k: v for k, v in quality.items() if k != "run_id"},
    }


def quality_summary(store: Store, run_ids: Iterable[int]) -> list[dict[str, Any]]:
    """Per run, in the order of `run_ids`: the mean of each `QUALITY` field over its finished sequences
    (NULLs, i.e. not measured, ignored; None when no sequence has the field), and counts.

    One dict per run: `run_id`, `sequences` (finished ones), `with_reference` (finished ones with a
    reference), `seeds` (distinct seeds recorded), then the `QUALITY` means. Averaged in SQL. A run id
    the store does not have raises CascadeError.
    """
    ids = list(dict.fromkeys(int(i) for i in run_ids))
    if not ids:
        return []
    with store.reader.connect() as conn:
        by_run = {r["run_id"]: r for r in _quality_rows(conn, ids)}
    missing = [i for i in ids if i not in by_run]
    if missing:
        raise CascadeError(
            f"no run {', '.join(map(str, missing))} in store {store.url}; `cascade runs list` shows the ids"
        )
    return [by_run[i] for i in ids]


def _quality_rows(conn, run_ids: list[int]) -> list[dict[str, Any]]:
    finished = (Sequence.run_id == Run.id) & Sequence.finished_at.is_not(None)
    q = (
        select(
            Run.id.label("run_id"),
            func.count(Sequence.id).label("sequences"),
            func.count(Sequence.reference).label("with_reference"),
            func.count(func.distinct(Sequence.seed)).label("seeds"),
            *(func.avg(getattr(Sequence, name)).label(name) for name in QUALITY_COLUMNS),
        )
        .select_from(Run)
        .outerjoin(Sequence, finished)
        .where(Run.id.in_(run_ids))
        .group_by(Run.id)
    )
    return [{**_row(r), **{name: _mean(r[name]) for name in QUALITY_COLUMNS}} for r in conn.execute(q).mappings()]


def _mean(value: Any) -> float | None:
    """avg() comes back as a float, or a Decimal from some drivers/backends: a plain float (None stays)."""
    return None if value is None else _json(float(value))


def list_sequences(store: Store, run_id: int) -> list[dict[str, Any]]:
    """A run's sequences in order, with their seed, metrics and quality fields (no token ids)."""
    cols = [c for c in Sequence.__table__.columns if c.name != "output_token_ids"]
    with store.reader.connect() as conn:
        _get_run(conn, run_id)
        rows = conn.execute(select(*cols).where(Sequence.run_id == run_id).order_by(Sequence.index)).mappings()
        return [{**_row(r), **derived(dict(r))} for r in rows]


def check_totals(store: Store, run_id: int) -> list[str]:
    """Where a run's stored numbers do not add up (SPEC.md: they must); [] when they do.

    Per finished sequence: its counters against the sums of its step rows and counts of its
    decision rows (when decisions were recorded); the run's totals against the sums over its
    finished sequences.
    """
    problems: list[str] = []
    with store.reader.connect() as conn:
        run = _get_run(conn, run_id)
        verifying = run["mode"] in VERIFYING_MODES
        seqs = (
            conn.execute(select(Sequence.__table__).where(Sequence.run_id == run_id, Sequence.finished_at.is_not(None)))
            .mappings()
            .all()
        )
        steps = {
            r.sequence_id: r
            for r in conn.execute(
                select(
                    Step.sequence_id,
                    func.count().label("n"),
                    *(
                        func.coalesce(func.sum(getattr(Step, c)), 0).label(c)
                        for c in ("drafted", "accepted", "emitted", "deferred", "target_calls", "drafter_calls")
                    ),
                )
                .join(Sequence, Sequence.id == Step.sequence_id)
                .where(Sequence.run_id == run_id)
                .group_by(Step.sequence_id)
            )
        }
        is_draft = Decision.kind == "draft"
        dec = {
            r.sequence_id: r
            for r in conn.execute(
                select(
                    Decision.sequence_id,
                    func.count().label("rows"),
                    func.sum(case((is_draft, 1), else_=0)).label("drafted"),
                    func.sum(case((is_draft & Decision.accepted.is_(True), 1), else_=0)).label("accepted"),
                    func.sum(case((is_draft & Decision.deferred.is_(True), 1), else_=0)).label("deferred"),
                    func.count(Decision.emitted_token).label("emitted"),
                )
                .join(Sequence, Sequence.id == Decision.sequence_id)
                .where(Sequence.run_id == run_id)
                .group_by(Decision.sequence_id)
            )
        }
        pos: dict[int, list[int]] = defaultdict(list)
        for r in conn.execute(
            select(Decision.sequence_id, Decision.position, func.count().label("n"))
            .join(Sequence, Sequence.id == Decision.sequence_id)
            .where(Sequence.run_id == run_id, is_draft, Decision.accepted.is_(True))
            .group_by(Decision.sequence_id, Decision.position)
        ):
            counts = pos[r.sequence_id]
            counts.extend([0] * (r.position + 1 - len(counts)))
            counts[r.position] = r.n

    def expect(where: str, name: str, stored: Any, computed: Any) -> None:
        same = (
            math.isclose(stored, computed, rel_tol=1e-9, abs_tol=1e-9)
            if isinstance(stored, float)
            else stored == computed
        )
        if not same:
            problems.append(f"{where}: {name} is {stored}, but the rows below it add up to {computed}")

    for s in seqs:
        where = f"sequence {s['id']}"
        st = steps.get(s["id"])
        n_steps = st.n if st else 0
        expect(where, "num_drafts", s["num_drafts"], n_steps if verifying else 0)
        for col, counter in (
            ("drafted", "num_draft_tokens"),
            ("accepted", "num_accepted_tokens"),
            ("deferred", "num_deferred"),
            ("target_calls", "target_calls"),
            ("drafter_calls", "drafter_calls"),
            ("emitted", "num_generated_tokens"),
        ):
            expect(where + " (steps)", counter, s[counter], int(getattr(st, col)) if st else 0)
        d = dec.get(s["id"])
        if d is not None:  # decisions recorded
            for col, counter in (
                ("drafted", "num_draft_tokens"),
                ("accepted", "num_accepted_tokens"),
                ("deferred", "num_deferred"),
                ("emitted", "num_generated_tokens"),
            ):
                expect(where + " (decisions)", counter, s[counter], int(getattr(d, col)))
            if verifying:
                expect(
                    where + " (decisions)",
                    "accepted_per_position",
                    _trim(s["accepted_per_position"]),
                    _trim(pos.get(s["id"], [])),
                )
    sums: dict[str, Any] = {c: sum(s[c] for s in seqs) for c in METRIC_COLUMNS}
    for c in METRIC_COLUMNS:
        expect(f"run {run_id}", c, run[c], sums[c])
    expect(f"run {run_id}", "num_sequences", run["num_sequences"], len(seqs))
    apps: list[int] = []
    for s in seqs:
        apps = add_counts(apps, s["accepted_per_position"] or [])
    expect(f"run {run_id}", "accepted_per_position", _trim(run["accepted_per_position"]), _trim(apps))
    return problems


def _trim(counts: list[int] | None) -> list[int]:
    out = list(counts or [])
    while out and out[-1] == 0:
        out.pop()
    return out


def list_calibrations(store: Store, *, rule: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Stored calibrations (`cascade calibrate`), newest first, optionally of one rule; plain dicts."""
    q = select(Calibration.__table__).order_by(Calibration.id.desc()).limit(limit)
    if rule is not None:
        q = q.where(Calibration.rule == rule)
    with store.reader.connect() as conn:
        return [_row(r) for r in conn.execute(q).mappings()]


def draft_acceptance(store: Store, run_ids: Iterable[int]) -> list[tuple[int, float, bool]]:
    """(position in block, the drafter's confidence max q, accepted) for every drafted position of these
    runs that verification reached: its earlier positions in the block were all accepted. What
    `cascade.schedules.costs.fit_temperatures` calibrates the adaptive schedule's confidences on."""
    ids = [int(i) for i in run_ids]
    q = (
        select(Decision.position, Decision.q_max, Decision.accepted)
        .join(Step, (Step.sequence_id == Decision.sequence_id) & (Step.index == Decision.step))
        .join(Sequence, Sequence.id == Decision.sequence_id)
        .where(
            Sequence.run_id.in_(ids),
            Decision.kind == "draft",
            Decision.q_max.is_not(None),
            Decision.position <= Step.accepted,
        )
    )
    with store.reader.connect() as conn:
        return [(int(r.position), float(r.q_max), bool(r.accepted)) for r in conn.execute(q)]
