# my_drafter.py
import torch
from pydantic import BaseModel, ConfigDict

from cascade.drafter import Draft, DrafterContext, DraftRequest, Feedback
from cascade.hookspecs import hookimpl


class Options(BaseModel):                     # validated from the policy's drafter.options
    model_config = ConfigDict(extra="forbid")
    token: int = 0

class RepeatDrafter:
    """Proposes the same token k times (deterministic: no q)."""
    name, deterministic, Options = "repeat", True, Options

    def __init__(self, options: Options, ctx: DrafterContext):   # ctx: vocab_size, tokenizer, device, target_model, ...
        self.token, self.device = options.token, ctx.device

    def reset(self, prompt_ids, params, generator):               # a new sequence starts
        pass

    def propose(self, context: torch.Tensor, request: DraftRequest) -> Draft:
        # context: (n,) every token so far; request.k, .min_confidence, .lookahead, .confidence
        return Draft(torch.full((request.k,), self.token, dtype=torch.long, device=self.device))

    def observe(self, feedback: Feedback):                        # feedback.n_accepted, .next_token, ...
        pass

@hookimpl
def register_drafters(register):
    register(RepeatDrafter.name, RepeatDrafter)
