"""Counters and per-step records of a generation, named as in SPEC.md (vLLM's names)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from cascade.features import BlockContext, decision_features, named
from cascade.verify.sampling import softmax


@dataclass(frozen=True)
class Decision:
    """One drafted position, or one token the target emitted itself (correction, bonus, deferred).

    The feature fields (q_x .. agree) are `cascade.features.FEATURES`, in that order (a test checks).
    """

    position: int  # index in the block (0-based); the correction/bonus row has position = accepted count
    kind: str  # "draft" | "correction" | "bonus" | "target"
    drafted_token: int | None
    emitted_token: int | None  # what this row put in the output (None: rejected draft)
    accepted: bool | None  # drafts only
    deferred: bool | None  # r(x) of the rule; drafts only
    q_x: float | None = None  # q(drafted) at T = 1
    q_max: float | None = None
    q_entropy: float | None = None
    q_margin: float | None = None  # top-1 − top-2 of q
    q_rank: float | None = None  # tokens q ranks above x
    p_x: float | None = None
    p_max: float | None = None
    p_entropy: float | None = None
    d_tv: float | None = None
    agree: float | None = None  # argmax p = argmax q: 1, else 0


@dataclass(frozen=True)
class StepRecord:
    index: int
    block_size: int  # tokens the engine asked the drafter for
    drafted: int
    accepted: int
    emitted: tuple[int, ...]
    deferred: int
    target_calls: int
    drafter_calls: int
    draft_seconds: float
    verify_seconds: float
    decisions: tuple[Decision, ...] = ()
    context: BlockContext | None = None  # where the block sat (CONTEXT); set when decisions are recorded
    row: int = 0  # which prompt of a batched call this step belongs to (its index in the prompts given)


@dataclass
class Metrics:
    num_drafts: int = 0  # verification steps (one target call each in speculative modes)
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    num_deferred: int = 0
    target_calls: int = 0
    drafter_calls: int = 0
    num_generated_tokens: int = 0
    num_prompt_tokens: int = 0
    decode_seconds: float = 0.0  # the whole generate() call, prefill included (so peers compare like for like)
    ttft_seconds: float = 0.0  # from the call to the first emitted token, prefill included

    def add_step(self, step: StepRecord, verification: bool) -> None:
        self.num_drafts += int(verification)
        self.num_draft_tokens += step.drafted
        self.num_accepted_tokens += step.accepted
        self.num_deferred += step.deferred
        self.target_calls += step.target_calls
        self.drafter_calls += step.drafter_calls
        if verification:
            grow = step.accepted - len(self.accepted_per_position)
            if grow > 0:
                self.accepted_per_position.extend([0] * grow)
            for i in range(step.accepted):
                self.accepted_per_position[i] += 1

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else math.nan

    @property
    def mean_acceptance_length(self) -> float:
        """τ = 1 + accepted / drafts: tokens per target call in speculative modes."""
        return 1 + self.num_accepted_tokens / self.num_drafts if self.num_drafts else math.nan

    @property
    def deferral_rate(self) -> float:
        return self.num_deferred / self.num_draft_tokens if self.num_draft_tokens else math.nan

    @property
    def tokens_per_second(self) -> float:
        return self.num_generated_tokens / self.decode_seconds if self.decode_seconds > 0 else math.nan

    @property
    def target_calls_per_token(self) -> float:
        return self.target_calls / self.num_generated_tokens if self.num_generated_tokens else math.nan

    @property
    def drafter_calls_per_token(self) -> float:
        return self.drafter_calls / self.num_generated_tokens if self.num_generated_tokens else math.nan

    def to_dict(self) -> dict:
        out = asdict(self)
        for name in DERIVED:
            out[name] = getattr(self, name)
        return out

    @classmethod
    def total(cls, parts: list[Metrics]) -> Metrics:
        out = cls()
        for m in parts:
            for f in COUNTERS:
                setattr(out, f, getattr(out, f) + getattr(m, f))
            out.accepted_per_position = add_counts(out.accepted_per_position, m.accepted_per_position)
        return out


def add_counts(a: list[int], b: list[int]) -> list[int]:
    """Element-wise sum of two per-position counts of different lengths (accepted_per_position)."""
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    return [x + (shorter[i] if i < len(shorter) else 0) for i, x in enumerate(longer)]


COUNTERS = (
    "num_drafts",
    "num_draft_tokens",
    "num_accepted_tokens",
    "num_deferred",
    "target_calls",
    "drafter_calls",
    "num_generated_tokens",
    "num_prompt_tokens",
    "decode_seconds",
    "ttft_seconds",
)
DERIVED = (
    "acceptance_rate",
    "mean_acceptance_length",
    "deferral_rate",
    "tokens_per_second",
    "target_calls_per_token",
    "drafter_calls_per_token",
)


@dataclass(frozen=True)
class Generation:
    """What `Engine.generate` returns for one prompt."""

    text: str  # the completion, cut at a stop string
    token_ids: list[int]  # generated tokens only
    prompt_tokens: int
    finish_reason: str  # "length" | "eos" | "stop" | "context"
    metrics: Metrics
    steps: list[StepRecord]


@dataclass(frozen=True)
class Quality:
    """Quality of one completion (SPEC.md, "Metrics"): what benchmarks compute and the store keeps per
    sequence. None = not measured (no reference, or the target's log-prob not computed)."""

    chrf: float | None = None  # chrF against the reference, 0..100
    target_logprob: float | None = None  # the target's mean log-prob of the emitted tokens (nats)
    exact_match: float | None = None  # first non-blank line equals the reference's, 0 or 1
    edit_similarity: float | None = None  # normalised Levenshtein similarity of the first line, 0..100
    edit_similarity_lines: float | None = None  # the same over the first 3 lines
    parses: float | None = None  # prompt + completion (complete lines) is Python or only unfinished, 0 or 1
    distinct_2: float | None = None  # distinct code-token bigrams / bigrams, 0..1
    repeat_4: float | None = None  # code-token 4-grams repeating an earlier one, 0..1

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


QUALITY = tuple(f for f in Quality.__dataclass_fields__)


def draft_row(position: int, drafted: int, emitted: int | None, *, deferred: bool, features: list[float]) -> Decision:
    """A drafted position: accepted when it was emitted; `features` in FEATURES order."""
    return Decision(
        position=position,
        kind="draft",
        drafted_token=drafted,
        emitted_token=emitted,
        accepted=emitted is not None,
        deferred=deferred,
        **named(features),
    )


def emitted_by_target(position: int, kind: str, token: int) -> Decision:
    """A token the target emitted itself: a correction, a bonus, or a target step / deferred position."""
    return Decision(position=position, kind=kind, drafted_token=None, emitted_token=token, accepted=None, deferred=None)


def truncate_step(step: StepRecord, n_emitted: int) -> StepRecord:
    """The step as the output saw it when EOS or a stop string cut it after n_emitted tokens.

    Accepted drafts past the cut count as not accepted (they were never emitted), so the
    step's rows still add up; such a final step emits `accepted` tokens for one target call.
    """
    rows, left = [], n_emitted
    for d in step.decisions:
        if d.emitted_token is not None:
            if left == 0:
                d = replace(d, emitted_token=None, accepted=False if d.kind == "draft" else d.accepted)
            else:
                left -= 1
        rows.append(d)
    return replace(
        step, emitted=step.emitted[:n_emitted], accepted=min(step.accepted, n_emitted), decisions=tuple(rows)
    )


def block_decisions(
    x, xs: list[int], probs, parents, p_logits, r_x: list[float], n: int, nxt: int, path: tuple[int, ...] | None
) -> tuple[Decision, ...]:
    """The Decision rows of one verified block: a row per draft (x (k,) with its q `probs` (k, V) or None,
    `parents` (k,) for a tree), then the correction or bonus token. p_logits (k + 1, V); r_x the rule's
    r(x_i); n drafts accepted (a tree: the nodes of `path`) and `nxt` after them."""
    k = len(xs)
    # p where each draft was proposed: the previous position of a chain, a tree node's parent
    at = list(range(k)) if parents is None else [i + 1 for i in parents.tolist()]
    feats = decision_features(x, probs, softmax(p_logits[at])).tolist() if k else []  # (k, F)
    kept = set(range(n)) if path is None else set(path)
    rows = [
        draft_row(i, xs[i], xs[i] if i in kept else None, deferred=bool(r_x[i]), features=feats[i]) for i in range(k)
    ]
    rows.append(emitted_by_target(n, "correction" if n < k else "bonus", nxt))
    return tuple(rows)
