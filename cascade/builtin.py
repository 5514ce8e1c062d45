"""cascade's own plugin ("cascade-builtin"): registers the SPEC.md deferral rules and the block schedules
through the public hooks, as a third party's plugin would."""

from __future__ import annotations

from collections.abc import Callable

from cascade.hookspecs import hookimpl
from cascade.rules import BUILTIN_RULES, Rule
from cascade.schedules.base import Schedule
from cascade.schedules.builtin import BUILTIN_SCHEDULES


@hookimpl
def register_rules(register: Callable[[str, type[Rule]], None]) -> None:
    for name, cls in BUILTIN_RULES.items():
        register(name, cls)


@hookimpl
def register_schedules(register: Callable[[str, type[Schedule]], None]) -> None:
    for name, cls in BUILTIN_SCHEDULES.items():
        register(name, cls)
