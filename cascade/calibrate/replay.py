"""One replay for `cascade calibrate`: decode every prompt with a policy at one α, log it as a run, measure.

A replay builds its engine through a shared `ModelCache` (models load once for the whole
calibration), decodes the prompts in order with the policy's seed, logs the run to the store
(one sequence per prompt, with its decisions and, when the prompt has a reference, its
quality), and returns what the search needs: the target-decided share, the quality figures
and the drafted positions' columns (for the rule scores of the first guess).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cascade.calibrate.scores import kept_and_emitted, replay_columns, target_share
from cascade.policy import Policy

QUALITY_METRIC = "edit_similarity"  # the sweep's quality axis (cascade.bench.sweep_analysis.QUALITY_METRIC)
GUARD = "parses"  # ... and its guard


@dataclass(frozen=True)
class Replay:
    alpha: float | None  # None: target-only
    share: float  # target-decided share (cascade.calibrate.scores)
    kept: int
    emitted: int
    quality: float | None  # mean first-line edit similarity over prompts with a reference
    parses: float | None  # share of completions that parse
    run_id: int | None
    seconds: float
    columns: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # drafted positions (first guess)
    rule: Any = field(default=None, repr=False)  # the built rule (scores, artefact)

    def as_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "share": self.share,
            "kept": self.kept,
            "emitted": self.emitted,
            "quality": self.quality,
            "parses": self.parses,
            "run_id": self.run_id,
            "seconds": round(self.seconds, 2),
        }


class Replayer:
    """Decode the same prompts again and again at different α, logging each pass as a run."""

    def __init__(
        self,
        prompts: list[dict],
        store: Any,
        max_new_tokens: int | None = None,
        registry: Any = None,
        with_quality: bool = False,
        say: Any = None,
    ):
        from cascade.bench.run import ModelCache

        self.prompts = prompts
        self.store = store
        self.max_new_tokens = max_new_tokens
        self.registry = registry
        self.with_quality = with_quality
        self.cache = ModelCache()
        self.count = 0
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def replay(self, policy: Policy, alpha: float | None) -> Replay:
        from cascade.bench import completion
        from cascade.bench.run import build_engine
        from cascade.store import engine_info

        t0 = time.perf_counter()
        engine = build_engine(policy, self.cache, self.registry)
        steps: list[Any] = []
        qualities: list[float] = []
        parses: list[float] = []
        run = self.store.start_run(policy, {**engine_info(engine), "source": "cascade calibrate"})
        with run:
            texts = [row["prompt"] for row in self.prompts]

            def decode(on_step):  # batched as the policy says
                return engine.stream(texts, max_new_tokens=self.max_new_tokens, on_step=on_step)

            for index, gen, seq in run.record(self.prompts, decode, seed=policy.decoding.seed):
                row = self.prompts[index]
                ref = row.get("reference")
                steps.extend(gen.steps)
                if self.with_quality:
                    q = completion.score(row["prompt"], gen.text, ref)
                    self.store.set_quality(seq, q, reference=ref)
                    if q.edit_similarity is not None:
                        qualities.append(float(q.edit_similarity))
                    if q.parses is not None:
                        parses.append(float(q.parses))
        kept, emitted = kept_and_emitted(steps)
        self.count += 1
        return Replay(
            alpha,
            target_share(kept, emitted),
            kept,
            emitted,
            float(np.mean(qualities)) if qualities else None,
            float(np.mean(parses)) if parses else None,
            run.run_id,
            time.perf_counter() - t0,
            replay_columns(steps),
            engine.rule,
        )
