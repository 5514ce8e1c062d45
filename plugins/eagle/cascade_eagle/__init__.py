"""Drafter plugin `eagle`: EAGLE-2 dynamic draft trees from a head that reads the target's features.

- the drafter `eagle` (`register_drafters`): `drafter: {plugin: eagle, options: {head: FOLDER}}`
  (`cascade_eagle.drafter`): drafts a tree expanded by cumulative confidence; the engine verifies it
  in one target pass (SPEC.md "Tree drafts");
- the command `cascade eagle train` (`register_commands`): train a head on a target's features
  (`cascade_eagle.train`), written as an HF-style folder with its card.

Importing this module is cheap: torch-heavy modules load when a drafter is built or a command runs.
"""

from __future__ import annotations

from cascade import hookimpl

__version__ = "0.2.0"


@hookimpl
def register_drafters(register):
    from cascade_eagle.drafter import EagleDrafter

    register(EagleDrafter.name, EagleDrafter)


@hookimpl
def register_commands(subparsers):
    from cascade_eagle.cli import add_parser

    add_parser(subparsers)
