"""A bench row: something that turns a prompt into a `Generation` on a target model.

Our policies are `PolicyRow`s (an engine over possibly shared models); transformers'
own speculative decoding comes as `peers.HFPeerRow`. Both carry `name`, `kind`
("policy" | "peer"), `auto`, `target_model`, `device`, `lossless`, and `encode`,
`generate`, `describe`.
"""

from __future__ import annotations

from typing import Any

from cascade.drafter import drafter_model
from cascade.policy import Policy
from cascade.runtime import models


def target_key(model) -> tuple:
    """Rows on the same loaded target compare with each other (speed-up, quality, identical tokens)."""
    return (id(model),)


def is_lossless_greedy(policy: Policy) -> bool:
    d = policy.decoding
    if d.temperature != 0.0:
        return False
    return (
        policy.mode == "target"
        or (policy.mode == "speculative" and policy.rule.name == "none")
        or (policy.mode == "lossy" and d.lenience == 1.0)
    )


class PolicyRow:
    """One of our policies: an engine over (possibly shared) models."""

    kind = "policy"

    def __init__(self, policy: Policy, engine, auto: bool = False):
        self.policy, self.engine = policy, engine
        self.name = policy.name
        self.auto = auto  # added by the bench (the target-only baseline), not asked for
        self.target_model = engine.target_model
        self.drafter_model = drafter_model(engine.drafter)  # None: no drafter, or one without a model (n-gram)
        self.device = engine.device
        self.lossless = is_lossless_greedy(policy)

    def cost_key(self) -> tuple:
        """Rows sharing (target, drafter, γ) share one measurement of the cost model's c and v(1..γ+1).

        γ is 0 for a row that does not verify blocks (sequential, drafter-only): its target calls need v(1) only;
        else the most the schedule drafts per step (`Schedule.max_draft`).
        """
        gamma = self.engine.max_draft if self.policy.verifies else 0
        return (id(self.target_model), id(self.drafter_model), gamma)

    def encode(self, prompt: str) -> list[int]:
        return self.engine.encode(prompt).tolist()

    def generate(
        self, prompt: str, max_new_tokens: int | None, *, on_step=None, record: bool = False, seed: int | None = None
    ):
        gen = self.engine.generate(
            prompt, max_new_tokens=max_new_tokens, seed=seed, on_step=on_step, record_decisions=record
        )
        models.sync(self.device)
        return gen

    def describe(self) -> dict[str, Any]:
        p = self.policy
        return {
            "mode": p.mode,
            "rule": p.rule.name,
            "alpha": p.rule.alpha,
            "lenience": p.decoding.lenience,
            "block_size": self.engine.max_draft,
            "temperature": p.decoding.temperature,
            "target": p.target.model,
            "drafter": _drafter_label(p),
        }


def _drafter_label(policy: Policy) -> str | None:
    if policy.drafter is None or policy.mode == "target":
        return None
    model = policy.drafter.options.get("model")
    return f"{policy.drafter.plugin}:{model}" if model else policy.drafter.plugin
