"""cascade plugin `learned`: deferral rules learned from the decision log.

- the rule `learned` (`register_rules`): `rule: {name: learned, alpha: A, options: {path: DIR}}`,
  a head trained by the command below (`cascade_learned.rule`);
- the command `cascade rules train` (`register_commands`): fit a head on logged decisions
  (`cascade_learned.train`), write it with its card (`cascade_learned.artefact`);
- the acceptance predictor `learned` (`register_predictors`) for the adaptive block schedule:
  `decoding: {schedule: {name: adaptive, options: {predictor: learned,
  predictor_options: {path: DIR}}}}` with an acceptance head (`--head acceptance --features q`).

Why a plugin and not an extra of cascade-llm: the rule and the command come through the
same hooks a third party uses, so the engine never imports scikit-learn, skops or
threadpoolctl (a logistic head scores as tensors and loads from JSON; only a tree head
imports scikit-learn, when it is loaded), `pip install cascade-llm` stays without them, and
`CASCADE_PLUGINS` can leave the rule out like any other plugin. Importing this module is
cheap: heavy imports happen when a head is loaded or a command runs.
"""

from __future__ import annotations

from cascade import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_rules(register):
    from cascade_learned.rule import LearnedRule

    register(LearnedRule.name, LearnedRule)


@hookimpl
def register_commands(subparsers):
    from cascade_learned.cli import add_parser

    add_parser(subparsers)


@hookimpl
def register_predictors(register):
    from cascade_learned.predictor import LearnedPredictor

    register("learned", LearnedPredictor)
