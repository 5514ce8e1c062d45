"""cascade: speculative cascades for fast LLM inference over any Hugging Face causal LM.

The public API is what this package exports (`__all__`) and the public modules below; plugins,
the dashboard and users import nothing else (tests/test_public_api.py checks the shipped ones).
Names load on first use, so `import cascade` (and the command line) stays light.

    from cascade import Engine
    engine = Engine.from_policy("policies/cascade-token-v3.yaml")
    print(engine.generate("def add(a, b):").text)

Writing a plugin (docs/plugins.md): `hookimpl`; drafters `DrafterBase`, `ModelDrafter`, `DrafterContext`,
`DraftRound`, `DraftStep`, `TreeRound`, `TreeDraft`, `Feedback`; rules `Rule`, `RuleBase`, `NoOptions`,
`DeferralInputs`; schedules `ScheduleBase`, `DraftPlan`, `StopRule`, `ScheduleSettings`,
`AcceptancePredictor`; errors `CascadeError`, `PluginError`, `PolicyError`.

Public modules besides this one: `cascade.store` (the decision store: `Store`, URLs), `cascade.store.queries`
and `cascade.store.readonly` (what the dashboard reads), `cascade.testing` (tiny models, law checks and
planted bugs for a plugin's tests),
`cascade.zoo.data` (the shipped corpus and its splits) and `cascade.bench.defaults` /
`cascade.bench.completion` (the shipped evaluation prompts and quality measures).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module that defines it (one owner each)
_EXPORTS = {
    # decoding
    "Engine": "cascade.decode.engine",
    "Generation": "cascade.metrics",
    "StepRecord": "cascade.metrics",
    "Decision": "cascade.metrics",
    "Metrics": "cascade.metrics",
    "Quality": "cascade.metrics",
    "SamplingParams": "cascade.verify.sampling",
    "softmax": "cascade.verify.sampling",
    # policies
    "Policy": "cascade.policy",
    "load_policy": "cascade.policy",
    "build_rule": "cascade.decode.build",
    "parse_policy": "cascade.policy",
    # models
    "load_model": "cascade.runtime.models",
    "load_tokenizer": "cascade.runtime.models",
    "resolve_model_path": "cascade.runtime.models",
    "resolve_dtype": "cascade.runtime.models",
    # plugins
    "hookimpl": "cascade.hookspecs",
    "Drafter": "cascade.drafter",
    "DrafterBase": "cascade.drafter",
    "DrafterContext": "cascade.drafter",
    "DraftRound": "cascade.drafter",
    "DraftStep": "cascade.drafter",
    "TreeRound": "cascade.drafter",
    "TreeDraft": "cascade.drafter",
    "Feedback": "cascade.drafter",
    "ModelDrafter": "cascade.model_drafter",
    "Rule": "cascade.rules",
    "NoOptions": "cascade.options",
    "DeferralInputs": "cascade.rules",
    "RuleBase": "cascade.rules",
    "BUILTIN_RULES": "cascade.rules",
    "DEFAULT_INF_CLIP": "cascade.rules",
    "Schedule": "cascade.schedules.base",
    "ScheduleBase": "cascade.schedules.base",
    "ScheduleSettings": "cascade.schedules.base",
    "DraftPlan": "cascade.schedules.base",
    "StopRule": "cascade.schedules.base",
    "AcceptancePredictor": "cascade.schedules.base",
    # the features rules and predictors read
    "BlockContext": "cascade.features",
    "FEATURES": "cascade.features",
    "P_FEATURES": "cascade.features",
    "CONTEXT": "cascade.features",
    "MODEL_FEATURES": "cascade.features",
    "Q_MODEL_FEATURES": "cascade.features",
    "model_features": "cascade.features",
    "model_features_rows": "cascade.features",
    # measuring
    "read_prompts": "cascade.prompts",
    "step_costs": "cascade.runtime.costmodel",
    "PROFILE_PROMPT": "cascade.schedules.profile",
    # errors
    "CascadeError": "cascade.errors",
    "PluginError": "cascade.errors",
    "PolicyError": "cascade.errors",
}

__all__ = [  # what the package exports; _EXPORTS says where each is defined
    "build_rule",
    "AcceptancePredictor",
    "BlockContext",
    "CONTEXT",
    "CascadeError",
    "Decision",
    "DeferralInputs",
    "RuleBase",
    "BUILTIN_RULES",
    "DEFAULT_INF_CLIP",
    "DraftPlan",
    "DraftRound",
    "DraftStep",
    "Drafter",
    "DrafterBase",
    "DrafterContext",
    "Engine",
    "FEATURES",
    "Feedback",
    "Generation",
    "MODEL_FEATURES",
    "Metrics",
    "ModelDrafter",
    "NoOptions",
    "PROFILE_PROMPT",
    "P_FEATURES",
    "PluginError",
    "Policy",
    "PolicyError",
    "Q_MODEL_FEATURES",
    "Quality",
    "Rule",
    "SamplingParams",
    "Schedule",
    "ScheduleBase",
    "ScheduleSettings",
    "StepRecord",
    "StopRule",
    "TreeDraft",
    "TreeRound",
    "hookimpl",
    "load_model",
    "load_tokenizer",
    "load_policy",
    "model_features",
    "model_features_rows",
    "parse_policy",
    "read_prompts",
    "resolve_dtype",
    "resolve_model_path",
    "softmax",
    "step_costs",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cascade' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from cascade.decode.engine import Engine
    from cascade.drafter import (
        Drafter,
        DrafterBase,
        DrafterContext,
        DraftRound,
        DraftStep,
        Feedback,
        TreeDraft,
        TreeRound,
    )
    from cascade.errors import CascadeError, PluginError, PolicyError
    from cascade.features import (
        CONTEXT,
        FEATURES,
        MODEL_FEATURES,
        P_FEATURES,
        Q_MODEL_FEATURES,
        BlockContext,
        model_features,
        model_features_rows,
    )
    from cascade.hookspecs import hookimpl
    from cascade.metrics import Decision, Generation, Metrics, Quality, StepRecord
    from cascade.model_drafter import ModelDrafter
    from cascade.options import NoOptions
    from cascade.policy import Policy, load_policy, parse_policy
    from cascade.prompts import read_prompts
    from cascade.rules import BUILTIN_RULES, DEFAULT_INF_CLIP, DeferralInputs, Rule, RuleBase
    from cascade.runtime.costmodel import step_costs
    from cascade.runtime.models import load_model, load_tokenizer, resolve_dtype, resolve_model_path
    from cascade.schedules.base import (
        AcceptancePredictor,
        DraftPlan,
        Schedule,
        ScheduleBase,
        ScheduleSettings,
        StopRule,
    )
    from cascade.schedules.profile import PROFILE_PROMPT
    from cascade.verify.sampling import SamplingParams, softmax
