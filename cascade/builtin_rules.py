"""cascade's own plugin ("cascade-builtin"): registers the SPEC.md deferral rules through the public hook."""

from __future__ import annotations

from collections.abc import Callable

from cascade.hookspecs import hookimpl
from cascade.rules import BUILTIN_RULES, Rule


@hookimpl
def register_rules(register: Callable[[str, type[Rule]], None]) -> None:
    for name, cls in BUILTIN_RULES.items():
        register(name, cls)
