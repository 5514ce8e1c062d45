"""The plugin contract (pluggy project name and entry-point group: `cascade`).

A plugin is a module listed under `[project.entry-points.cascade]` that defines
functions marked with `cascade.hookimpl`. Every hook runs once per plugin, when the
plugin manager loads (`cascade.plugins.build_registry`) or when the command line is
built (`register_commands`), never per token. `docs/plugins.md` is the reference; a
test checks that it lists every hook below with its exact signature.

This module stays at the bottom of the import graph: the contract types are
imported for type checkers only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import argparse

    from cascade.drafter import Drafter
    from cascade.rules import Rule
    from cascade.schedules.base import AcceptancePredictor, Schedule

hookspec = pluggy.HookspecMarker("cascade")
hookimpl = pluggy.HookimplMarker("cascade")


@hookspec
def register_drafters(register: Callable[[str, type[Drafter]], None]) -> None:
    """Register drafter classes: call ``register(name, cls)`` once per drafter.

    ``cls`` follows ``cascade.drafter.Drafter`` (subclass ``cascade.DrafterBase``
    for its defaults): class attributes ``name``, ``deterministic`` and ``Options`` (a
    pydantic model with ``extra="forbid"``), a constructor ``cls(options, context:
    DrafterContext)``, and the methods ``start(prompts)``, ``step(DraftRound) -> DraftStep``
    (the engine drives the draft round by round and draws every token), ``observe(feedbacks)``
    and ``keep(rows)``; what else it does is declared (``batched``, ``reads_target_features``,
    ``adopts_target_cache``, ``proposes_trees``, ``model``, ``max_positions``, ``runtime``).

    The name is what a policy writes under ``drafter.plugin``. At registration the
    class is checked against the contract (a drafter written for the old
    ``propose(context, k, ...)`` is refused, naming the plugin), and registering a
    name another plugin already registered is a ``PluginError`` naming both plugins.
    """


@hookspec
def register_rules(register: Callable[[str, type[Rule]], None]) -> None:
    """Register deferral rules: call ``register(name, cls)`` once per rule.

    ``cls`` follows ``cascade.rules.Rule``: class attributes ``name``, ``reads_q``,
    ``reads_p``, ``reads_features``, ``alpha_range`` and ``Options`` (a pydantic
    model with ``extra="forbid"``; ``cascade.NoOptions`` for none; subclass ``cascade.RuleBase`` for the
    defaults of ``critical_alpha``, ``requirements`` and ``provenance``), a
    constructor ``cls(alpha, options)`` and
    ``defer(q, p, inputs: DeferralInputs | None = None) -> r``. The name is what a
    policy writes under ``rule.name``. The class is checked at registration (a rule
    built as ``cls(alpha, **options)`` is refused, naming the plugin); duplicates are
    a ``PluginError`` naming both plugins.
    """


@hookspec
def register_schedules(register: Callable[[str, type[Schedule]], None]) -> None:
    """Register block schedules: call ``register(name, cls)`` once per schedule.

    ``cls`` follows ``cascade.Schedule`` (subclass ``cascade.ScheduleBase``
    for its defaults): class attributes ``name``, ``needs_costs`` (gets the measured cost
    table), ``shared`` (one instance per batch, else per generation) and ``Options`` (a
    pydantic model, validated from ``decoding.schedule.options``), a constructor
    ``cls(settings: ScheduleSettings)``, the class method ``max_draft(options) -> int`` (the
    most it drafts per step; the default, 64, sizes caches generously) and the methods
    ``plan(limit) -> DraftPlan``,
    ``plan_batch(limits) -> list[DraftPlan]`` (a shared schedule's, asked once per step
    for every row) and ``update(drafted, accepted)``. The name is what a policy writes under
    ``decoding.schedule.name``; duplicates are a ``PluginError`` naming both plugins.
    """


@hookspec
def register_predictors(register: Callable[[str, type[AcceptancePredictor]], None]) -> None:
    """Register acceptance predictors for the adaptive schedule: ``register(name, cls)`` per class.

    ``cls`` has ``Options`` (a pydantic model, validated from
    ``decoding.schedule.options.predictor_options``), a constructor ``cls(options)``
    and ``predict_acceptance(features, positions, context) -> Tensor (k,)``: the
    chance that draft j is accepted given the drafts before it were, from
    drafter-side features only. A policy names it with
    ``schedule: {name: adaptive, options: {predictor: NAME}}``.
    """


@hookspec
def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``cascade`` subcommands: ``subparsers.add_parser(name, help=...)`` per command.

    Each sub-parser sets ``func`` with ``set_defaults(func=...)``; the command line
    calls ``func(args)`` with the parsed arguments and exits with the ``int`` it
    returns (raise ``cascade.errors.CascadeError`` for a user error: it is printed
    without a traceback). A command name another plugin (or cascade itself) already
    added is a ``PluginError`` naming both. Import heavy dependencies inside ``func``,
    not at module level: every ``cascade`` invocation builds the parser.
    """
