"""Training data for learned deferral rules: the logged drafted positions, column by column.

One row per drafted position (`decisions.kind = 'draft'`), joined with its step (the block's
context, `cascade.features.CONTEXT`, and how many drafts the step accepted) and its sequence
(the prompt, for splitting by prompt), in a stable order (run, sequence, step, position).
The feature columns are `cascade.features.FEATURES`; NULL (absent, or logged before the
column existed) comes back as NaN. Callers build model inputs from these columns with
`cascade.features.model_features_rows`, the function the engine uses at decode time.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from cascade.errors import CascadeError
from cascade.features import CONTEXT, FEATURES
from cascade.store.models import Decision, Run, Sequence, Step
from cascade.store.writer import Store

FLOAT_COLUMNS = FEATURES + CONTEXT
"""Float columns, NaN where the store holds NULL."""
OTHER_COLUMNS = (
    "run_id",
    "sequence_id",
    "step",
    "position",
    "step_drafted",
    "step_accepted",
    "accepted",
    "deferred",
    "alpha",
    "temperature",
)
"""The other columns: ids and counts as ints; `accepted` and `deferred` as 0/1 (None: not logged)."""


@dataclass(frozen=True)
class TrainingRows:
    """Drafted positions as columns (`columns[name][i]` is row i), with each row's prompt."""

    columns: dict[str, list[Any]]
    prompt_index: list[int]  # row -> index into `prompts`
    prompts: list[str]  # distinct prompt texts, in order of first appearance
    runs: list[dict[str, Any]]  # the runs read: id, policy_name, mode, rule, alpha, drafter, temperature
    query: str  # what was asked, in words and SQL (for a model card)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt_index)

    def sha256(self) -> str:
        """A hash of the rows' values (not of the store): equal data, equal hash."""
        h = hashlib.sha256()
        for name in (*FLOAT_COLUMNS, *OTHER_COLUMNS):
            h.update(name.encode())
            h.update(repr(self.columns[name]).encode())
        h.update(repr(self.prompt_index).encode())
        for p in self.prompts:
            h.update(hashlib.sha256(p.encode()).digest())
        return h.hexdigest()


def _select_runs(conn, run_ids: list[int] | None, policy: str | None) -> list[dict[str, Any]]:
    q = select(Run.id, Run.policy_name, Run.mode, Run.rule, Run.alpha, Run.drafter, Run.temperature, Run.status)
    if run_ids is not None:
        q = q.where(Run.id.in_(run_ids))
    if policy is not None:
        q = q.where(Run.policy_name == policy)
    if run_ids is None:
        q = q.where(Run.status == "done")  # chosen by policy or all: finished runs only
    rows = [dict(r) for r in conn.execute(q.order_by(Run.id)).mappings()]
    if run_ids is not None:
        found = {r["id"] for r in rows}
        missing = [i for i in run_ids if i not in found]
        if missing:
            raise CascadeError(f"no run {', '.join(map(str, missing))} in the store; `cascade runs list` shows the ids")
    return rows


def training_rows(store: Store, *, run_ids: list[int] | None = None, policy: str | None = None) -> TrainingRows:
    """The drafted positions of the chosen runs: `run_ids`, else the finished runs of policy `policy`,
    else every finished run. Raises CascadeError when no run matches."""
    with store.reader.connect() as conn:
        runs = _select_runs(conn, run_ids, policy)
        if not runs:
            what = f"policy {policy!r}" if policy else "the store"
            raise CascadeError(f"no finished run of {what} in {store.url}; `cascade runs list` shows what is there")
        ids = [r["id"] for r in runs]
        q = (
            select(
                Sequence.run_id,
                Decision.sequence_id,
                Decision.step,
                Decision.position,
                Step.drafted.label("step_drafted"),
                Step.accepted.label("step_accepted"),
                Decision.accepted,
                Decision.deferred,
                Decision.alpha,
                Run.temperature,
                *(getattr(Decision, f) for f in FEATURES),
                *(getattr(Step, c) for c in CONTEXT),
            )
            .join(Step, (Step.sequence_id == Decision.sequence_id) & (Step.index == Decision.step))
            .join(Sequence, Sequence.id == Decision.sequence_id)
            .join(Run, Run.id == Sequence.run_id)
            .where(Sequence.run_id.in_(ids), Decision.kind == "draft")
            .order_by(Sequence.run_id, Decision.sequence_id, Decision.step, Decision.position)
        )
        sql = str(q.compile(compile_kwargs={"literal_binds": True}))
        result = conn.execute(q).mappings().all()
        prompt_of = {
            r.id: r.prompt_text
            for r in conn.execute(select(Sequence.id, Sequence.prompt_text).where(Sequence.run_id.in_(ids)))
        }
    columns: dict[str, list[Any]] = {name: [] for name in (*OTHER_COLUMNS, *FLOAT_COLUMNS)}
    prompts: dict[str, int] = {}
    prompt_index: list[int] = []
    for r in result:
        for name in OTHER_COLUMNS:
            v = r[name]
            columns[name].append(int(v) if isinstance(v, bool) else v)
        for name in FLOAT_COLUMNS:
            v = r[name]
            columns[name].append(math.nan if v is None else float(v))
        text = prompt_of[r["sequence_id"]]
        prompt_index.append(prompts.setdefault(text, len(prompts)))
    query = f"drafted positions (decisions.kind = 'draft') of runs {ids}, joined with their steps and sequences:\n{sql}"
    return TrainingRows(columns, prompt_index, list(prompts), runs, query)
