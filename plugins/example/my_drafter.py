# my_drafter.py
import torch
from pydantic import BaseModel, ConfigDict

from cascade import DrafterBase, DrafterContext, DraftRound, DraftStep, hookimpl


class Options(BaseModel):  # validated from the policy's drafter.options
    model_config = ConfigDict(extra="forbid")
    token: int = 0


class RepeatDrafter(DrafterBase):
    """Proposes the same token at every position (deterministic: no q)."""

    name, deterministic, Options = "repeat", True, Options

    def __init__(self, options: Options, ctx: DrafterContext):  # ctx: vocab_size, tokenizer, device, target_model, ...
        self.token, self.device = options.token, ctx.device

    def step(self, ask: DraftRound) -> DraftStep:
        # ask.contexts[i]: row ask.rows[i]'s tokens so far (+ ask.drafted drawn this draft); the engine decides
        # how far to draft. A model drafter returns DraftStep(logits=...) and the engine draws from them
        return DraftStep(tokens=torch.full((len(ask.rows),), self.token, dtype=torch.long, device=self.device))


@hookimpl
def register_drafters(register):
    register(RepeatDrafter.name, RepeatDrafter)
