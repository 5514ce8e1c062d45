"""A bench's result: one `BenchRow` per policy or peer, and the machine it ran on."""

from __future__ import annotations

import math
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from cascade.tables import nan_to_none


@dataclass
class BenchRow:
    name: str
    kind: str  # "policy" | "baseline" (target-only added by the bench) | "peer"
    mode: str
    rule: str | None
    alpha: float | None
    lenience: float | None
    block_size: int | None
    temperature: float | None
    target: str
    drafter: str | None
    tokens_per_second: float  # Σ tokens / Σ seconds over the timed passes (min/max: single passes)
    tokens_per_second_min: float
    tokens_per_second_max: float
    tokens_per_second_q1: float
    tokens_per_second_q3: float
    tokens_per_second_passes: list[float]
    speedup: float  # Σ tokens/Σ seconds over the timed passes over target-only's (same target, same process)
    speedup_min: float  # over the passes, each paired with target-only's pass of the same round
    speedup_max: float
    baseline: str | None  # the target-only row the speed-up and relative quality refer to
    mean_acceptance_length: float  # τ
    acceptance_rate: float
    deferral_rate: float
    target_calls_per_token: float
    drafter_calls_per_token: float
    ttft_seconds: float  # mean over the prompts (median over the passes)
    num_generated_tokens: int  # per pass
    decode_seconds: float  # median over the passes
    chrf: float  # chrF against the references, 0..100: the mean over prompts of each output's (the store's definition)
    chrf_rel: float  # chrF / target-only's chrF
    target_logprob: float  # the target's mean log-prob per emitted token (nats)
    target_logprob_delta: float  # minus target-only's
    lossless_greedy: bool
    identical: dict[str, bool] = field(default_factory=dict)  # other row -> same tokens on every prompt
    differing_prompts: dict[str, int] = field(default_factory=dict)
    cost_model: dict[str, float] | None = None
    run_id: int | None = None  # the store's run of the recorded pass
    # the speed-up's 95% interval: ratio of tokens/s summed over the timed passes, bootstrapped over prompts
    speedup_low: float = math.nan
    speedup_high: float = math.nan
    seeds: int = 1  # recorded generations per prompt
    chrf_corpus: float = math.nan  # corpus chrF over all the outputs (sacrebleu's corpus statistic), for reference
    # per QUALITY metric: {"mean", "low", "high", "n"} over prompts (seeds averaged first; cascade.bench.stats)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)
    quality_delta: dict[str, dict[str, float]] = field(default_factory=dict)  # paired: row − target-only


@dataclass
class BenchResult:
    rows: list[BenchRow]
    meta: dict[str, Any]
    outputs: dict[str, list[list[int]]] = field(repr=False, default_factory=dict)  # row -> token ids per prompt

    def row(self, name: str) -> BenchRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": [nan_to_none(asdict(r)) for r in self.rows]}


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": _cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": None,
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.cuda.get_device_name(0)
    return info


def _cpu_count() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()
