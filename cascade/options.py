"""`NoOptions`: the options of a plugin class (rule, schedule, predictor) that has none of its own."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class NoOptions(BaseModel):
    """No options: the policy's `rule.options` (or `decoding.schedule.options`) must be empty. Subclass it for a
    frozen, `extra="forbid"` options model of your own."""

    model_config = ConfigDict(extra="forbid", frozen=True)
