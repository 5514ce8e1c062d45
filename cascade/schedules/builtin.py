"""Block schedules: how many tokens to draft (and verify) at each step, behind one protocol.

A schedule is a small class registered by name through the plugin hook `register_schedules`
(cascade's own are registered by its built-in plugin, exactly as a third party's would be);
a policy picks one and configures it through one door, `decoding.schedule: {name, options}`, the
options validated against the schedule's own `Options` (a built-in's exactly as a third party's).

Each generation gets its own instance (a schedule with `shared = True` gets one per batch,
its `update` called for every row of a step before the next `plan_batch`, which the engine
asks once per step for every live row's plan). A `DraftPlan` says how many tokens to draft at
most and optionally a `StopRule`: the engine, which draws every drafted token, asks it before
each draw with the confidences c_1..c_j of the drafts so far (each computed *before* its token
was drawn) and stops the row before drawing x_j when it says so; rows whose plans share one
rule object (a batch's shared budget) are judged together. Deciding to draft x_j from
c_1..c_j alone is a stopping time of the draft: the verification stays exactly lossless (or
exactly π) as with a constant block.

    name        options (defaults)                             what it drafts
    constant    block_size (4)                                 always `block_size`
    heuristic   block_size (4), min_block_size (1),            +2 after a fully accepted block, −1
                max_block_size (16)                            otherwise, within [min, max] (transformers')
    bass        as heuristic                                   BASS's heuristic for batches: one γ for all
                                                               rows, grown when some row kept every draft,
                                                               shrunk otherwise (one instance per batch)
    confidence  block_size (4), confidence (0.4)               up to `block_size`; stop when the drafter's
                                                               top probability < `confidence`
    adaptive    max_block_size (16), predictor (none),         see below
                predictor_options ({})

    adaptive    SPEC.md "Adaptive verification length": up to `max_block_size`, stop where
                no longer block promises a higher E(k) / C(k) (expected tokens per second) computed from
                the drafter's calibrated confidences and the measured cost table
                (`cascade.schedules.profile`); or from an acceptance predictor a plugin registers
                (`register_predictors`, e.g. the learned acceptance head) when
                `options: {predictor: NAME, predictor_options: {...}}` names one.
                One instance per batch: with B > 1 rows the batch shares one verification
                budget (`SurvivalStop.stops`: the width that maximises the rows' total expected
                tokens per second of the batch's step)

An acceptance predictor scores draft j from the drafter-side features of q_j evaluated at
q's top token (`cascade.features.decision_features(argmax q, q, None)`), which are known
before x_j is drawn whichever token is then drawn: the stopping rule stays a stopping time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade.errors import PluginError
from cascade.schedules.base import (
    MAX_DRAFT,
    DraftPlan,
    ScheduleBase,
    ScheduleSettings,
)
from cascade.schedules.costs import calibrate


@dataclass(frozen=True)
class ConfidenceFloor:
    """Stop a row when the confidence of its next token falls below `threshold` (the `confidence` schedule)."""

    threshold: float

    def __call__(self, rows: Sequence[Sequence[float]]) -> list[bool]:
        return [bool(c) and c[-1] < self.threshold for c in rows]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConstantOptions(_Options):
    block_size: int = Field(4, ge=1, le=MAX_DRAFT)  # tokens drafted per step


class GrowShrinkOptions(_Options):
    """`heuristic` and `bass`: a block that starts at `block_size` and moves within [min, max]."""

    block_size: int = Field(4, ge=1, le=MAX_DRAFT)  # the first step's block
    min_block_size: int = Field(1, ge=1, le=MAX_DRAFT)
    max_block_size: int = Field(16, ge=1, le=MAX_DRAFT)

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_block_size > self.max_block_size:
            raise ValueError("min_block_size must be <= max_block_size")
        return self


class ConfidenceOptions(_Options):
    block_size: int = Field(4, ge=1, le=MAX_DRAFT)  # at most this many drafts per step
    confidence: float = Field(0.4, ge=0.0, le=1.0)  # stop drafting below this top probability


class AdaptiveOptions(_Options):
    max_block_size: int = Field(16, ge=1, le=MAX_DRAFT)  # at most this many drafts per step
    predictor: str | None = None  # a registered acceptance predictor; None: the drafter's own confidence
    predictor_options: dict[str, Any] = Field(default_factory=dict)  # validated against its Options


class Constant(ScheduleBase):
    name = "constant"
    Options = ConstantOptions

    @classmethod
    def max_draft(cls, options: ConstantOptions) -> int:
        return options.block_size

    def __init__(self, settings: ScheduleSettings):
        super().__init__(settings)
        self.options = cast(ConstantOptions, settings.options)

    def plan(self, limit: int) -> DraftPlan:
        return DraftPlan(min(self.options.block_size, limit))


class _GrowShrink(ScheduleBase):
    """A block that starts at `block_size` and moves within [min_block_size, max_block_size] (heuristic, bass)."""

    Options = GrowShrinkOptions

    @classmethod
    def max_draft(cls, options: GrowShrinkOptions) -> int:
        return max(options.block_size, options.max_block_size)

    def __init__(self, settings: ScheduleSettings):
        super().__init__(settings)
        self.options = cast(GrowShrinkOptions, settings.options)
        self.current = self.options.block_size


class Heuristic(_GrowShrink):
    """transformers' `heuristic`: +2 after a fully accepted block, −1 otherwise."""

    name = "heuristic"

    def plan(self, limit: int) -> DraftPlan:
        return DraftPlan(min(self.current, limit))

    def update(self, drafted: int, accepted: int) -> None:
        s = self.options
        if drafted > 0 and accepted == drafted:
            self.current = min(s.max_block_size, self.current + 2)
        else:
            self.current = max(s.min_block_size, self.current - 1)


class Bass(_GrowShrink):
    """BASS's draft-length heuristic (Qian et al. 2024, Algorithm 1): one γ for the whole batch.

    One instance serves every row of a batch (`shared`). After each step, with x_max the most drafts
    any row kept: all of γ kept by some row grows γ by 2 (up to `max_block_size`); otherwise
    γ ← max(min_block_size, x_max, γ − ⌈γ/10⌉ − s), s = 1 after a shrink (it shrinks faster when
    shrinking again). It starts at `block_size`. At B = 1 it is the same rule on one row.
    """

    name = "bass"
    shared: ClassVar[bool] = True
    INCREMENT, MODULUS = 2, 10  # l_incre, l_mod of the paper's defaults

    def __init__(self, settings: ScheduleSettings):
        super().__init__(settings)
        self.shrunk = 0  # s: 1 after a step that shrank γ
        self.pending: list[tuple[int, int]] = []  # (drafted, accepted) of the rows of the step just verified

    def plan(self, limit: int) -> DraftPlan:
        if self.pending:  # the first plan after a step: the batch's outcome is complete
            self._adapt(max(a for _, a in self.pending), max(d for d, _ in self.pending))
            self.pending = []
        return DraftPlan(min(self.current, limit))

    def update(self, drafted: int, accepted: int) -> None:
        self.pending.append((drafted, accepted))

    def _adapt(self, x_max: int, drafted: int) -> None:
        s = self.options
        if x_max >= min(self.current, drafted) and drafted > 0:
            self.current, self.shrunk = min(s.max_block_size, self.current + self.INCREMENT), 0
        else:
            shrink = self.current - math.ceil(self.current / self.MODULUS) - self.shrunk
            self.current, self.shrunk = max(s.min_block_size, x_max, shrink), 1


class Confidence(ScheduleBase):
    """Up to `block_size`; the drafter stops when its top probability falls below `confidence`."""

    name = "confidence"
    Options = ConfidenceOptions

    @classmethod
    def max_draft(cls, options: ConfidenceOptions) -> int:
        return options.block_size

    def __init__(self, settings: ScheduleSettings):
        super().__init__(settings)
        self.options = cast(ConfidenceOptions, settings.options)

    def plan(self, limit: int) -> DraftPlan:
        o = self.options
        return DraftPlan(min(o.block_size, limit), stop=ConfidenceFloor(o.confidence))


@dataclass(frozen=True)
class SurvivalStop:
    """SPEC.md's adaptive rule k* = argmax_k E(k)/C(k) as a stopping time, for one row or a batch.

    a_i = the calibrated confidence of draft i, S_j = Π_{i≤j} a_i its survival, E(j) = 1 + Σ_{i≤j} S_i
    the expected emitted tokens of a block of j drafts, C(j) = draft_seconds·(j + lookahead) +
    verify_seconds[j] (one target call over j + 1 tokens) + step_seconds (the loop's own time per
    step). Before drawing x_j it knows c_1..c_j only; it stops when no block of m ≥ j drafts, the
    later ones predicted as likely as x_j (a_i = calibrated(i, c_j) for i > j), beats the block of
    j − 1 drafts it has. Measured costs are not convex (on a CPU a call over 3 tokens may cost what
    one over 9 does), so E/C can fall and rise again: stopping at its first drop would stop short.
    For constant confidences this is exactly the argmax; for falling ones it may draft one more.

    A batch (`stops`) shares one verification budget (SPEC.md): the rows are verified in one call
    padded to the widest, whose cost C(m) (a batch's table) depends on the width m only, so the
    top-B* prefixes of the rows' positions ranked by survival are every row's first m drafts, and
    the budget is the width. The rule is the same with E summed over the rows: before column j it
    stops when no width m ≥ j beats j − 1 in Σ_b E_b / C. Row b's draft j is kept or not from the
    confidences known before it was drawn and from the other rows (drawn from their own streams,
    independent of it given the contexts): still a stopping time for every row, so still exact.
    """

    draft_seconds: float
    verify_seconds: tuple[float, ...]  # [n - 1]: a target call over n tokens, n = 1..K + 1
    temperatures: tuple[float, ...] = ()  # per-position calibration (1 = as reported)
    lookahead: bool = False
    step_seconds: float = 0.0  # what every step costs besides its forwards

    def cost(self, j: int) -> float:
        v = self.verify_seconds[min(j, len(self.verify_seconds) - 1)]
        return self.draft_seconds * (j + int(self.lookahead)) + v + self.step_seconds

    def calibrated(self, j: int, c: float) -> float:
        """a_j: the confidence of draft j (1-based) through its position's temperature."""
        t = self.temperatures[j - 1] if j - 1 < len(self.temperatures) else 1.0
        return calibrate(c, t)

    @property
    def max_drafts(self) -> int:
        return len(self.verify_seconds) - 1

    def survival(self, confidences: Sequence[float]) -> tuple[float, float]:
        """(S_j, E(j)) of a block of j = len(confidences) drafts."""
        survival, expected = 1.0, 1.0
        for i, c in enumerate(confidences, start=1):
            survival *= self.calibrated(i, c)
            expected += survival
        return survival, expected

    def __call__(self, rows: Sequence[Sequence[float]]) -> list[bool]:
        """The StopRule: every row of the batch stops, or none (one row: its own rule)."""
        return [self.stops(rows)] * len(rows)

    def stops(self, rows: Sequence[Sequence[float]]) -> bool:
        """A batch (BatchStopRule): stop before column j = the longest row's length?"""
        j = max((len(c) for c in rows), default=0)
        if j == 0:
            return True
        expected = 0.0  # Σ_b E_b(j − 1): every row's block if the batch stops now
        drafting: list[tuple[float, float]] = []  # (S_b(j − 1), c_bj) of the rows holding x_j's confidence
        for confs in rows:
            survival, e = self.survival(confs[: j - 1])
            expected += e
            if len(confs) == j:
                drafting.append((survival, confs[-1]))
        have = expected / self.cost(j - 1)
        # widths m ≥ j, each row's later drafts as likely as its x_j
        survivals = [s for s, _ in drafting]
        for m in range(j, self.max_drafts + 1):
            for b, (_, c) in enumerate(drafting):
                survivals[b] *= self.calibrated(m, c)
                expected += survivals[b]
            if expected / self.cost(m) >= have:
                return False
        return True


PROBE_EVERY = 8  # adaptive: a step that drafts anyway, however little drafting paid lately
FORGET = 0.9  # adaptive: weight of older steps in the running first-draft acceptance


class Adaptive(ScheduleBase):
    """DSpark-style: draft while more tokens promise more expected tokens per second (SurvivalStop).

    Asking for a confidence costs a drafter step. So before drafting, the schedule checks, from
    this batch's history only (the acceptance of earlier first drafts, older steps weighing
    less), whether a first draft can pay; when it cannot, it verifies nothing but the target's
    own token (k = 0, no drafter call), except every PROBE_EVERY-th step, which drafts one token
    to keep the estimate current. Either way the choice never reads the block being verified.
    One instance serves a batch (`shared`): its rows draft or not together (a row drafting alone
    would widen the whole batch's verification), and share one budget (`SurvivalStop.stops`).
    """

    name = "adaptive"
    needs_costs = True
    shared: ClassVar[bool] = True
    Options = AdaptiveOptions

    @classmethod
    def max_draft(cls, options: AdaptiveOptions) -> int:
        return options.max_block_size

    def __init__(self, settings: ScheduleSettings):
        super().__init__(settings)
        self.options = cast(AdaptiveOptions, settings.options)
        costs = settings.costs
        if costs is None:
            raise PluginError("the adaptive schedule needs a cost table (cascade.schedules.profile); none was measured")
        self.stop = SurvivalStop(
            costs.draft_seconds, costs.verify_seconds, costs.temperatures, settings.lookahead, costs.step_seconds
        )
        self.steps = 0
        self.tried, self.kept = 0.0, 0.0  # forgetful counts of first drafts verified and accepted
        self.pending: list[bool] = []  # whether each row's first draft of the step just verified was kept

    def first_acceptance(self) -> float:
        """The running acceptance of first drafts (Laplace-smoothed: 1/2 before any)."""
        return (self.kept + 1.0) / (self.tried + 2.0)

    def plan(self, limit: int) -> DraftPlan:
        return self.plan_batch([limit])[0]

    def plan_batch(self, limits: Sequence[int]) -> list[DraftPlan]:
        """Every live row's plan for one step (`limits[b]`: what row b's budget leaves)."""
        if self.pending:  # the step just verified, all rows at once: older steps weigh FORGET less
            self.tried = FORGET * self.tried + len(self.pending)
            self.kept = FORGET * self.kept + sum(self.pending)
            self.pending = []
        cap = min(self.options.max_block_size, self.stop.max_drafts)
        probe = self.steps % PROBE_EVERY == 0
        self.steps += 1
        a = self.first_acceptance()
        # does the first draft pay at that acceptance? (only the first: later drafts of a model drafter are
        # kept less often, so extrapolating a to them would call the drafter where it does not pay; the stop
        # rule then decides, from each draft's own confidence, how far past the first to go)
        if self.stop.draft_seconds == 0.0 or (1.0 + a) / self.stop.cost(1) >= 1.0 / self.stop.cost(0):
            return [DraftPlan(min(cap, limit), stop=self.stop) for limit in limits]  # one rule: one budget
        # the first draft would not pay at the acceptance seen lately: the target's step alone, or on a probe
        # step one draft, the least that keeps the estimate current
        return [DraftPlan(min(1, cap, limit) if probe else 0) for limit in limits]

    def update(self, drafted: int, accepted: int) -> None:
        if drafted:
            self.pending.append(accepted > 0)


class NoDrafts(ScheduleBase):
    """No draft: the target's own token each step (a request that switched speculation off; not registered)."""

    name = "no-drafts"

    @classmethod
    def max_draft(cls, options: Any) -> int:
        return 0

    def plan(self, limit: int) -> DraftPlan:
        return DraftPlan(0)


BUILTIN_SCHEDULES: dict[str, type[ScheduleBase]] = {
    cls.name: cls for cls in (Constant, Heuristic, Bass, Confidence, Adaptive)
}
