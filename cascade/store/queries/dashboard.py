"""The dashboard's queries: every SQL statement its pages need, returning plain dicts and lists.

Built on `cascade.store.queries` (run summaries, per-position counts, quality means, sequences),
with what only the dashboard asks: the runs table with each run's target-only baseline on the
same prompts, the acceptance-length histogram, step timings, one sequence's decision rows, a
run's drafted-position features (for re-applying rules), its prompts, and calibration records.

"Same prompts" is a fingerprint computed in SQL per run: the number of sequences, the total
prompt length, and the smallest and largest prompt prefix. A run's baseline is the newest
finished target-only run with the same target, fingerprint and temperature (any temperature
when none matches).
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import MetaData, Table, case, func, inspect, select

from cascade.features import CONTEXT, FEATURES
from cascade.store.models import Decision, Run, Sequence, Step
from cascade.store.queries import (
    _json,
    _row,
    derived,
    list_sequences,
    per_position,
    quality_summary,
    show_run,
    speed_ratio,
)
from cascade.store.writer import Store

FINGERPRINT_PREFIX = 64  # characters of the first/last prompt that go into a prompt set's fingerprint
MAX_FEATURE_ROWS = 400_000  # drafted positions `draft_features` returns at most (the first ones, in order)
RUN_COLUMNS = (Run.temperature, Run.block_size, Run.policy_sha256, Run.info)
QUALITY_SHOWN = ("chrf", "target_logprob", "edit_similarity", "exact_match", "parses", "repeat_4")

__all__ = [
    "acceptance_histogram",
    "calibrations",
    "draft_features",
    "list_sequences",
    "run_detail",
    "run_prompts",
    "run_table",
    "sequence_decisions",
    "show_run",
    "step_times",
]


def _fingerprints(conn, run_ids: list[int] | None = None) -> dict[int, str]:
    head = func.substr(Sequence.prompt_text, 1, FINGERPRINT_PREFIX)
    q = select(
        Sequence.run_id,
        func.count().label("n"),
        func.sum(func.length(Sequence.prompt_text)).label("chars"),
        func.min(head).label("lo"),
        func.max(head).label("hi"),
    ).group_by(Sequence.run_id)
    if run_ids is not None:
        q = q.where(Sequence.run_id.in_(run_ids))
    out = {}
    for r in conn.execute(q):
        key = f"{r.n}|{r.chars}|{r.lo}|{r.hi}"
        out[r.run_id] = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return out


def _pick_baselines(runs: list[dict[str, Any]]) -> None:
    """Fill each run's `baseline_run_id`: the newest done target-only run on the same target and prompts."""
    pool: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for r in sorted(runs, key=lambda r: -r["id"]):
        if r["mode"] == "target" and r["status"] == "done":
            pool.setdefault((r["target"], r["prompt_set"]), []).append(r)
    for r in runs:
        cands = pool.get((r["target"], r["prompt_set"]), [])
        same_t = [c for c in cands if c["temperature"] == r["temperature"]]
        picks = same_t or cands
        r["baseline_run_id"] = picks[0]["id"] if picks else None


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def run_table(store: Store, *, limit: int = 5000) -> list[dict[str, Any]]:
    """Every run (newest first, at most `limit`): identity, status, totals, derived rates, quality means, the
    Ray Serve `deployment` and `replica` a served run was logged by, `speedup_source` ("bench": a `cascade bench`
    row's own timed speed-up with `speedup_low`/`speedup_high`, against its bench's target-only row; "logged": the
    run's logged throughput over its baseline's),
    `prompt_set` (fingerprint), `baseline_run_id` and, against that baseline, `speedup` (tok/s ratio),
    `quality_rel` (edit similarity ratio) and `parses_rel` (parse-rate ratio)."""
    from cascade.store.queries import RUN_SUMMARY

    q = select(*RUN_SUMMARY, *RUN_COLUMNS).order_by(Run.id.desc()).limit(limit)
    with store.reader.connect() as conn:
        rows = [{**_row(r), **derived(dict(r))} for r in conn.execute(q).mappings()]
        prints = _fingerprints(conn) if rows else {}
    bench: dict[int, dict[str, Any]] = {}  # a bench run's own timed figures (`cascade bench` writes them)
    for r in rows:  # a served run's Ray Serve deployment and replica (None for everything else)
        info = r.pop("info") or {}
        r["deployment"], r["replica"] = info.get("deployment"), info.get("replica")
        if isinstance(info.get("bench"), dict):
            bench[r["id"]] = info["bench"]
    quality = {q["run_id"]: q for q in quality_summary(store, [r["id"] for r in rows])} if rows else {}
    for r in rows:
        r["prompt_set"] = prints.get(r["id"])
        qs = quality.get(r["id"], {})
        r.update({k: qs.get(k) for k in QUALITY_SHOWN})
        r["with_reference"] = qs.get("with_reference", 0)
    _pick_baselines(rows)
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        own = bench.get(r["id"], {})
        if own.get("baseline_run_id") in by_id:  # a bench row: against the target-only row of the same bench
            r["baseline_run_id"] = own["baseline_run_id"]
        base = by_id.get(r["baseline_run_id"]) if r["baseline_run_id"] is not None else None
        # a bench row's speed-up is the bench's own (its timed passes, with their interval); any other run's is its
        # logged throughput over its baseline's
        r["speedup"] = own.get("speedup") if own.get("speedup") is not None else speed_ratio(r, base) if base else None
        r["speedup_low"], r["speedup_high"] = own.get("speedup_low"), own.get("speedup_high")
        r["speedup_source"] = "bench" if own.get("speedup") is not None else "logged" if base else None
        r["quality_rel"] = _ratio(r["edit_similarity"], base["edit_similarity"]) if base else None
        r["parses_rel"] = _ratio(r["parses"], base["parses"]) if base else None
        r["chrf_rel"] = _ratio(r["chrf"], base["chrf"]) if base else None
    return rows


def acceptance_histogram(conn, run_id: int) -> list[dict[str, Any]]:
    """Verification steps by how many drafts they accepted: [{accepted, steps}], ascending."""
    q = (
        select(Step.accepted, func.count().label("steps"))
        .join(Sequence, Sequence.id == Step.sequence_id)
        .where(Sequence.run_id == run_id, Step.drafted > 0)
        .group_by(Step.accepted)
        .order_by(Step.accepted)
    )
    return [{"accepted": int(r.accepted), "steps": int(r.steps)} for r in conn.execute(q)]


def step_times(conn, run_id: int) -> list[dict[str, Any]]:
    """Mean draft and verify seconds by step index (over the run's sequences): [{step, steps, draft_seconds,
    verify_seconds}]."""
    q = (
        select(
            Step.index,
            func.count().label("steps"),
            func.avg(Step.draft_seconds).label("draft"),
            func.avg(Step.verify_seconds).label("verify"),
        )
        .join(Sequence, Sequence.id == Step.sequence_id)
        .where(Sequence.run_id == run_id)
        .group_by(Step.index)
        .order_by(Step.index)
    )
    return [
        {
            "step": int(r.index),
            "steps": int(r.steps),
            "draft_seconds": _json(float(r.draft or 0.0)),
            "verify_seconds": _json(float(r.verify or 0.0)),
        }
        for r in conn.execute(q)
    ]


def run_detail(store: Store, run_id: int) -> dict[str, Any]:
    """`show_run` plus the run's policy YAML, temperature, block size, the acceptance-length histogram and
    step timings (`histogram`, `step_times`). CascadeError for an unknown run id."""
    out = show_run(store, run_id)
    with store.reader.connect() as conn:
        extra = conn.execute(select(Run.policy_yaml, *RUN_COLUMNS).where(Run.id == run_id)).mappings().one()
        out["run"].update(_row(extra))
        out["histogram"] = acceptance_histogram(conn, run_id)
        out["step_times"] = step_times(conn, run_id)
    return out


def sequence_decisions(store: Store, sequence_id: int) -> dict[str, Any]:
    """One sequence: `sequence` (id, run_id, index, prompt, output, output_token_ids), `run` (policy_name,
    target, rule, alpha, temperature, mode) and `decisions`: its decision rows in logged order (step,
    position, kind, tokens, features, rule, alpha, deferred, accepted)."""
    cols = [c for c in Decision.__table__.columns if c.name != "sequence_id"]
    with store.reader.connect() as conn:
        seq = (
            conn.execute(
                select(
                    Sequence.id,
                    Sequence.run_id,
                    Sequence.index,
                    Sequence.prompt_text,
                    Sequence.output_text,
                    Sequence.output_token_ids,
                    Sequence.finish_reason,
                ).where(Sequence.id == sequence_id)
            )
            .mappings()
            .first()
        )
        if seq is None:
            return {"sequence": None, "run": None, "decisions": []}
        run = (
            conn.execute(
                select(Run.id, Run.policy_name, Run.target, Run.rule, Run.alpha, Run.temperature, Run.mode).where(
                    Run.id == seq["run_id"]
                )
            )
            .mappings()
            .one()
        )
        rows = (
            conn.execute(select(*cols).where(Decision.sequence_id == sequence_id).order_by(Decision.id))
            .mappings()
            .all()
        )
    return {"sequence": _row(seq), "run": _row(run), "decisions": [_row(r) for r in rows]}


def draft_features(store: Store, run_id: int, *, limit: int = MAX_FEATURE_ROWS) -> dict[str, Any]:
    """A run's drafted positions in logged order, as columns (lists): sequence_id, step, position, every
    feature a rule reads (`cascade.features.FEATURES`, and the block's CONTEXT), deferred, accepted; plus
    `target_calls` per step (`steps`: count, `target_calls`: sum) and `truncated` (more rows than `limit`)."""
    names = ("sequence_id", "step", "position", *FEATURES, *CONTEXT, "deferred", "accepted")
    columns = [getattr(Step if n in CONTEXT else Decision, n) for n in names]
    q = (
        select(*columns)
        .join(Step, (Step.sequence_id == Decision.sequence_id) & (Step.index == Decision.step))
        .join(Sequence, Sequence.id == Decision.sequence_id)
        .where(Sequence.run_id == run_id, Decision.kind == "draft")
        .order_by(Decision.sequence_id, Decision.step, Decision.position)
        .limit(limit + 1)
    )
    with store.reader.connect() as conn:
        rows = conn.execute(q).all()
        steps = conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(Step.target_calls), 0),
                func.coalesce(func.sum(case((Step.drafted > 0, 1), else_=0)), 0),
            )
            .join(Sequence, Sequence.id == Step.sequence_id)
            .where(Sequence.run_id == run_id)
        ).one()
    truncated = len(rows) > limit
    rows = rows[:limit]
    cols: dict[str, Any] = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    cols.update(steps=int(steps[0]), target_calls=int(steps[1]), drafting_steps=int(steps[2]), truncated=truncated)
    return cols


def run_prompts(store: Store, run_id: int) -> list[dict[str, Any]]:
    """A run's prompts in order as `cascade run --prompts` rows: {"prompt", "reference"?}."""
    with store.reader.connect() as conn:
        rows = conn.execute(
            select(Sequence.prompt_text, Sequence.reference).where(Sequence.run_id == run_id).order_by(Sequence.index)
        ).all()
    return [{"prompt": p, **({"reference": ref} if ref is not None else {})} for p, ref in rows]


def calibrations(store: Store, *, limit: int = 500) -> list[dict[str, Any]]:
    """Calibration records (newest first) when the store has a `calibrations` table, else []."""
    with store.reader.connect() as conn:
        if not inspect(conn).has_table("calibrations"):
            return []
        table = Table("calibrations", MetaData(), autoload_with=conn)
        order = table.c.id.desc() if "id" in table.c else None
        q = select(table).limit(limit)
        if order is not None:
            q = q.order_by(order)
        return [_row(r) for r in conn.execute(q).mappings()]


def per_position_rows(store: Store, run_id: int) -> list[dict[str, Any]]:
    """`per_position` on its own connection (drafted, accepted, deferred, acceptance rate by block position)."""
    with store.reader.connect() as conn:
        return per_position(conn, run_id)
