"""The plugin contract (pluggy project name and entry-point group: `cascade`).

A plugin is a module listed under `[project.entry-points.cascade]` that defines
functions marked with `cascade.hookimpl`. Hooks run once, when the plugin
manager loads, never per token.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("cascade")
hookimpl = pluggy.HookimplMarker("cascade")


@hookspec
def register_drafters(register: Callable[[str, type], None]) -> None:
    """Register drafter classes: call ``register(name, cls)`` once per drafter.

    ``cls`` follows ``cascade.drafter.Drafter``: class attributes ``name``,
    ``deterministic`` and ``Options`` (a pydantic model with ``extra="forbid"``),
    and a constructor ``cls(options, context: DrafterContext)``. The name is what a
    policy writes under ``drafter.plugin``. Registering a name another plugin
    already registered is a load-time ``PluginError`` naming both plugins.
    """


@hookspec
def register_rules(register: Callable[[str, type], None]) -> None:
    """Register deferral rules: call ``register(name, cls)`` once per rule.

    ``cls`` follows ``cascade.rules.Rule``: class attributes ``name``, ``reads_q``,
    ``reads_p``, ``alpha_range``, a constructor ``cls(alpha, **options)`` and
    ``defer(q, p) -> r``. The name is what a policy writes under ``rule.name``.
    Duplicates are a load-time ``PluginError`` naming both plugins.
    """
