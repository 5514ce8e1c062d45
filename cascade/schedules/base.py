"""The schedule contract (docs/plugins.md "The schedule contract"): how many tokens to draft at each step.

A schedule is a small class registered by name through the plugin hook `register_schedules`. Each
generation gets its own instance (one per batch when `shared`); per step the engine asks it for a
`DraftPlan` (`plan`, or `plan_batch` for a shared one): at most k tokens and optionally a `StopRule`,
which the engine asks before every draw with the confidences so far (each known before its token is
drawn), so a draft's length is a stopping time and verification stays exact. `ScheduleBase` holds the
contract's defaults; `cascade.schedules.builtin` the built-in schedules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from pydantic import BaseModel

from cascade.errors import PluginError
from cascade.options import NoOptions
from cascade.schedules.costs import CostTable


class StopRule(Protocol):
    def __call__(self, rows: Sequence[Sequence[float]]) -> Sequence[bool]:
        """Before drawing column j of the drafts of the rows sharing this rule (one row, or a batch sharing one
        budget): rows[b] holds row b's confidences c_1..c_j when it is still drafting (c_j that of x_j, not yet
        drawn), or all of its drafts' when its draft ended. -> per row, True: do not draw x_j (its draft ends at
        j − 1); read for the rows still drafting only."""
        ...


@dataclass(frozen=True)
class DraftPlan:
    """What a schedule asks of the next draft."""

    k: int  # draft at most k tokens
    # stop where this says, from confidences only (the engine asks it before every draw); rows whose plans hold
    # the same object are judged together (a batch's shared budget)
    stop: StopRule | None = None


class AcceptancePredictor(Protocol):
    """What `register_predictors` registers: P(draft j accepted | drafts before it accepted) per position."""

    Options: ClassVar[type[BaseModel]]  # validated from `decoding.schedule.options.predictor_options`

    def __init__(self, options: Any) -> None: ...

    def predict_acceptance(self, features: torch.Tensor, positions: torch.Tensor, context: Any) -> torch.Tensor:
        """features (k, len(FEATURES)) (target side NaN), positions (k,), context a BlockContext -> (k,) in [0, 1]."""
        ...


MAX_DRAFT = 64  # the most tokens any schedule may draft per step (what a schedule that declares no cap gets)


@dataclass(frozen=True)
class ScheduleSettings:
    """What a schedule is built from: its validated options (`decoding.schedule.options`) and what the engine
    knows: whether it drafts a lookahead, the cost table when the schedule reads one, an acceptance predictor."""

    options: BaseModel = field(default_factory=NoOptions)  # the schedule's validated Options
    lookahead: bool = False  # the engine also drafts q_{k+1} (a cascade's bonus): one more drafter step
    costs: CostTable | None = None  # measured at engine start for schedules with needs_costs
    predictor: AcceptancePredictor | None = None  # built from options.predictor (adaptive)


@runtime_checkable
class Schedule(Protocol):
    name: ClassVar[str]
    needs_costs: ClassVar[bool]  # gets `settings.costs` (measured or read from the profile cache)
    shared: ClassVar[bool]  # one instance per batch (its update called for every row of a step), else one per row
    Options: ClassVar[type[BaseModel]]

    def __init__(self, settings: ScheduleSettings) -> None: ...

    @classmethod
    def max_draft(cls, options: Any) -> int:
        """The most tokens it will ever plan per step with these options (the engine sizes each row's cache
        and the cost table by it)."""
        ...

    def plan(self, limit: int) -> DraftPlan:
        """The next draft: at most `limit` tokens (what the token budget leaves)."""
        ...

    def plan_batch(self, limits: Sequence[int]) -> list[DraftPlan]:
        """A shared schedule: every live row's plan for one step (`limits[b]`: what row b's budget leaves)."""
        ...

    def update(self, drafted: int, accepted: int) -> None:
        """After a verification step that drafted `drafted` tokens and kept `accepted`."""
        ...


class ScheduleBase:
    """The contract's defaults: subclass it and override what your schedule does."""

    name: ClassVar[str] = ""
    needs_costs: ClassVar[bool] = False
    shared: ClassVar[bool] = False
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, settings: ScheduleSettings):
        self.settings = settings

    @classmethod
    def max_draft(cls, options: Any) -> int:
        return MAX_DRAFT

    def plan(self, limit: int) -> DraftPlan:
        raise NotImplementedError

    def plan_batch(self, limits: Sequence[int]) -> list[DraftPlan]:
        return [self.plan(limit) for limit in limits]

    def update(self, drafted: int, accepted: int) -> None:
        pass


def check_predictor_class(name: str, cls: type[Any]) -> None:
    """Refuse an acceptance predictor class that does not follow the contract."""
    options = getattr(cls, "Options", None)
    if not hasattr(cls, "predict_acceptance") or not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise PluginError(
            f"acceptance predictor {name!r} ({cls.__name__}) needs a pydantic `Options` and "
            "predict_acceptance(features, positions, context); see docs/plugins.md"
        )


def check_schedule_class(name: str, cls: type[Any]) -> None:
    """Refuse a schedule class that does not follow the contract, naming what is missing."""
    needed = ("needs_costs", "shared", "Options", "max_draft", "plan", "plan_batch", "update")
    missing = [a for a in needed if not hasattr(cls, a)]
    if missing:
        raise PluginError(
            f"schedule {name!r} ({cls.__name__}) lacks {', '.join(missing)}: subclass "
            "cascade.ScheduleBase for the defaults; see docs/plugins.md"
        )
    if not (isinstance(cls.Options, type) and issubclass(cls.Options, BaseModel)):
        raise PluginError(
            f"schedule {name!r} ({cls.__name__}): `Options` must be a pydantic model; see docs/plugins.md"
        )
