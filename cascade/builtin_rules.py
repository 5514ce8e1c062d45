"""cascade's own plugin: registers the SPEC.md deferral rules through the public hook."""

from cascade.hookspecs import hookimpl
from cascade.rules import BUILTIN_RULES


@hookimpl
def register_rules(register):
    for name, cls in BUILTIN_RULES.items():
        register(name, cls)
