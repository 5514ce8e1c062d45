"""What an engine is built from, loaded from a validated policy and the installed plugins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cascade.drafter import Drafter, DrafterContext
from cascade.errors import plugin_errors
from cascade.policy import Policy, check_policy, drafter_options, load_policy, predictor_options, rule_options
from cascade.rules import Rule
from cascade.runtime import models


@dataclass(frozen=True)
class Parts:
    policy: Policy
    target: Any  # the HF model
    tokenizer: Any
    drafter: Drafter | None
    drafter_factory: Callable[[], Drafter] | None  # another instance, built as `drafter` was (one per batch row)
    rule: Rule
    schedule: type
    predictor: Any


def build_rule(policy: Policy, registry: Any = None) -> Rule:
    """The policy's deferral rule, built by its plugin with its validated options (no model is loaded): what
    the dashboard's what-if re-applies to a run's logged features."""
    from cascade.plugins import registry as default_registry

    registry = registry or default_registry()
    rule_cls = registry.rule(policy.rule.name)
    with plugin_errors(f"rule {policy.rule.name!r} failed to build"):
        return rule_cls(policy.rule.alpha, rule_options(policy, rule_cls))


def build_parts(policy: Policy | str | Path, registry: Any = None, loader: Any = models) -> Parts:
    """Validate the policy against the installed plugins, load the models, build the drafter and the rule.

    `loader` provides `load_model` and `load_tokenizer` (signatures of `cascade.runtime.models`);
    a benchmark passes a cache so policies sharing a model load it once.
    """
    from cascade.plugins import registry as default_registry

    if not isinstance(policy, Policy):
        policy = load_policy(policy)
    registry = registry or default_registry()
    check_policy(policy, registry)
    spec = policy.target
    device = models.resolve_device(spec.device)
    dtype = models.resolve_dtype(spec.dtype, device)
    path = models.resolve_model_path(spec.model, policy.base_dir)
    tokenizer = loader.load_tokenizer(path, spec.trust_remote_code, spec.revision, spec.gguf_file)
    target = loader.load_model(path, dtype, device, spec.trust_remote_code, spec.revision, spec.gguf_file)
    rule = build_rule(policy, registry)
    drafter = factory = None
    if policy.mode != "target":
        assert policy.drafter is not None  # the schema requires one outside target mode
        name = policy.drafter.plugin
        drafter_cls = registry.drafter(name)
        ctx = DrafterContext(
            vocab_size=target.get_output_embeddings().weight.shape[0],
            tokenizer=tokenizer,
            target_name=spec.model,
            device=device,
            dtype=dtype,
            max_positions=models.max_positions(target.config),
            base_dir=policy.base_dir,
            load_model=loader.load_model,
            target_model=target,
            batch_size=policy.decoding.batch_size,
        )
        options = drafter_options(policy, drafter_cls)

        def factory() -> Drafter:
            with plugin_errors(f"drafter {name!r} failed to build"):
                return drafter_cls(options, ctx)

        drafter = factory()
    predictor = None
    pname = policy.decoding.schedule.options.get("predictor")
    if pname:
        pred_cls = registry.predictor(pname)
        with plugin_errors(f"acceptance predictor {pname!r} failed to build"):
            predictor = pred_cls(predictor_options(policy, pred_cls))
    return Parts(
        policy, target, tokenizer, drafter, factory, rule, registry.schedule(policy.decoding.schedule.name), predictor
    )
