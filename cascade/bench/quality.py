"""Quality of a completion (SPEC.md, "Metrics"): chrF against a reference, and the target's log-prob.

- chrF (Popović 2015, sacrebleu's implementation: character n-grams up to 6, β = 2)
  of the completion against the prompt's reference continuation, 0..100. A row of a
  benchmark reports the corpus-level score over its prompts; a sequence in the store
  gets its sentence-level score.
- The target's mean log-prob of the emitted tokens: one forward pass of the target
  over prompt + completion, log-softmax at T = 1, read at each emitted token. It
  says how likely the target finds what a policy wrote; target-only greedy decoding
  sits near the top, a drafter that wanders sits lower.

Both are compared to target-only decoding on the same prompts: chrF as a ratio
(`relative`), the log-prob as a difference in nats per token (`delta`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence chrF of one completion against its reference, 0..100."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(hypothesis, [reference]).score)


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str | None]) -> float:
    """Corpus chrF over the pairs that have a reference; NaN when none has one."""
    from sacrebleu.metrics import CHRF

    pairs = [(h, r) for h, r in zip(hypotheses, references, strict=True) if r is not None]
    if not pairs:
        return math.nan
    hyps, refs = zip(*pairs)
    return float(CHRF().corpus_score(list(hyps), [list(refs)]).score)


@torch.inference_mode()
def token_logprobs(
    model,
    prompt_ids: Sequence[int] | torch.Tensor,
    generated: Sequence[int] | torch.Tensor,
) -> torch.Tensor:
    """log p_target(x_i | prompt, x_<i) for every generated token, at T = 1. (n,) float32 on the CPU.

    One forward pass over prompt + generated (no cache); only the n positions that predict
    a generated token are turned into logits (`logits_to_keep`).
    """
    device = next(model.parameters()).device
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long).flatten()
    gen = torch.as_tensor(generated, dtype=torch.long).flatten()
    n, p = gen.shape[0], prompt.shape[0]
    if n == 0:
        return torch.empty(0)
    if p == 0:
        raise ValueError("the prompt must hold at least one token: the first generated token is conditioned on it")
    ids = torch.cat([prompt, gen]).to(device)  # (P + n,)
    # positions P-1 .. P+n-2 predict the n generated tokens: keep the last n + 1 logits, drop the final one
    try:
        logits = model(input_ids=ids.unsqueeze(0), use_cache=False, logits_to_keep=n + 1).logits[0, :n]  # (n, V)
    except TypeError:  # a model without `logits_to_keep` (some remote code): all positions, then slice
        logits = model(input_ids=ids.unsqueeze(0), use_cache=False).logits[0, p - 1 : p + n - 1]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, gen.to(device).unsqueeze(-1)).squeeze(-1).cpu()


def mean_logprob(model, prompt_ids, generated) -> float:
    """The target's mean log-prob (nats per token) of the generated tokens; NaN when there are none."""
    lp = token_logprobs(model, prompt_ids, generated)
    return float(lp.mean()) if lp.numel() else math.nan


def relative(value: float, baseline: float) -> float:
    """value / baseline (chrF relative to target-only); NaN when either is missing or the baseline is 0."""
    if value is None or baseline is None or math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return math.nan
    return value / baseline


def delta(value: float, baseline: float) -> float:
    """value − baseline (log-prob relative to target-only, nats per token)."""
    if value is None or baseline is None:
        return math.nan
    return value - baseline
