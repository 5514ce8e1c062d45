"""Peers measured beside our policies: transformers' own speculative decoding on the same models.

`hf-assisted` is `generate(assistant_model=...)` with our drafter model as assistant;
`hf-prompt-lookup` is `generate(prompt_lookup_num_tokens=...)`. Both are greedy, use the
policy's block size, and return a `Generation` like the engine's so the bench treats
them as rows. `hf-assisted-default` is assisted generation with transformers' own
defaults (20 tokens, confidence early stop at 0.4 tuned online): the schedule a
transformers user gets without tuning, which the adaptive schedule is measured against.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import torch

from cascade.metrics import Generation, Metrics
from cascade.runtime import models

if TYPE_CHECKING:
    from cascade.bench.rows import PolicyRow

HF_ASSISTED, HF_LOOKUP = "hf-assisted", "hf-prompt-lookup"
HF_ASSISTED_DEFAULT = "hf-assisted-default"  # transformers' own schedule: what its users get out of the box
# transformers 5.x's assisted-generation defaults (GenerationConfig: 20 tokens, constant, confidence 0.4,
# whose threshold it re-tunes online when scikit-learn is installed)
HF_DEFAULT_TOKENS, HF_DEFAULT_SCHEDULE, HF_DEFAULT_CONFIDENCE = 20, "constant", 0.4


class _CountCalls:
    """Count forward passes of a model while active (forward hook; used in the untimed pass only)."""

    def __init__(self, model):
        self.model, self.n, self.handle = model, 0, None

    def __enter__(self):
        self.n = 0
        self.handle = self.model.register_forward_hook(self._hook)
        return self

    def _hook(self, module, args, output):
        self.n += 1

    def __exit__(self, *exc):
        self.handle.remove()


class _FirstToken:
    """A transformers streamer that notes when the first generated token arrives (TTFT)."""

    def __init__(self):
        self.puts, self.at = 0, None

    def put(self, value):
        self.puts += 1  # the first put is the prompt
        if self.puts == 2 and self.at is None:
            self.at = time.perf_counter()

    def end(self):
        pass


class HFPeerRow:
    """transformers' own speculative decoding on our models: assisted generation or prompt lookup, greedy.

    The assistant reads its block size from its generation config (transformers 5.x):
    `num_assistant_tokens = block_size`, schedule `constant` (our `heuristic` maps to
    `heuristic_transient`, which resets per call as ours does per sequence), and no
    confidence early stop (`assistant_confidence_threshold = 0`). The config is swapped
    in only for the duration of each call, so the shared model is left as it was.
    """

    kind = "peer"
    lossless = True  # greedy assisted generation and prompt lookup reproduce the target's greedy output

    def __init__(
        self,
        name: str,
        like: PolicyRow,
        *,
        assistant=None,
        lookup_ngram: int | None = None,
        block_size: int | None = None,
        transformers_defaults: bool = False,
    ):
        from transformers import GenerationConfig

        self.name, self.like, self.auto = name, like, False
        self.target_model = like.target_model
        self.device = like.device
        self.assistant = assistant
        # one model object as both target and assistant: forward passes cannot be told apart
        self.shared = assistant is not None and assistant is like.target_model
        self.block_size = HF_DEFAULT_TOKENS if transformers_defaults else (block_size or like.engine.max_draft)
        self.lookup_ngram = lookup_ngram
        d = like.policy.decoding
        tok = like.engine.tokenizer
        self.ignore_eos = d.ignore_eos
        self.eos_id = None if d.ignore_eos else tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.kwargs: dict[str, Any] = {"do_sample": False, "num_beams": 1, "pad_token_id": pad}
        if d.stop:
            self.kwargs.update(stop_strings=list(d.stop), tokenizer=tok)
        if assistant is not None:
            cfg = GenerationConfig.from_dict(assistant.generation_config.to_dict())
            cfg.num_assistant_tokens = self.block_size
            if transformers_defaults:
                cfg.num_assistant_tokens_schedule = HF_DEFAULT_SCHEDULE
                cfg.assistant_confidence_threshold = HF_DEFAULT_CONFIDENCE
            else:
                cfg.num_assistant_tokens_schedule = (
                    "heuristic_transient" if d.schedule.name == "heuristic" else "constant"
                )
                cfg.assistant_confidence_threshold = 0.0
            self.assistant_config = cfg
            self.kwargs["assistant_model"] = assistant
        else:
            self.kwargs.update(prompt_lookup_num_tokens=self.block_size, max_matching_ngram_size=lookup_ngram or 3)
        self.max_positions = models.max_positions(self.target_model.config)

    def encode(self, prompt: str) -> list[int]:
        return self.like.encode(prompt)

    def describe(self) -> dict[str, Any]:
        like = self.like.policy
        drafter = (
            f"hf-assistant:{like.drafter.options.get('model')}"
            if self.assistant is not None
            else f"hf-prompt-lookup:max_ngram={self.lookup_ngram or 3}"
        )
        return {
            "mode": "peer",
            "rule": None,
            "alpha": None,
            "lenience": None,
            "block_size": self.block_size,
            "temperature": 0.0,
            "target": like.target.model,
            "drafter": drafter,
        }

    @contextlib.contextmanager
    def _assistant_config(self):
        if self.assistant is None:
            yield
            return
        saved = self.assistant.generation_config
        self.assistant.generation_config = self.assistant_config
        try:
            yield
        finally:
            self.assistant.generation_config = saved

    def generate(
        self, prompt: str, max_new_tokens: int | None, *, on_step=None, record: bool = False, seed: int | None = None
    ):
        ids = self.encode(prompt)  # greedy: `seed` changes nothing
        budget = max_new_tokens or self.like.policy.decoding.max_new_tokens
        if self.max_positions is not None:
            budget = min(budget, self.max_positions - len(ids))
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        kwargs = dict(self.kwargs, max_new_tokens=budget, attention_mask=torch.ones_like(input_ids))
        if self.ignore_eos:
            kwargs["eos_token_id"] = None
        metrics = Metrics(num_prompt_tokens=len(ids))
        streamer = _FirstToken() if record else None  # TTFT is read in the untimed pass only
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._assistant_config())
            stack.enter_context(_quiet_transformers())
            counters = []
            if record and not self.shared:
                counters = [stack.enter_context(_CountCalls(self.target_model))]
                if self.assistant is not None:
                    counters.append(stack.enter_context(_CountCalls(self.assistant)))
            t0 = time.perf_counter()
            out = self.target_model.generate(input_ids, streamer=streamer, **kwargs)
            models.sync(self.device)
            metrics.decode_seconds = time.perf_counter() - t0
        tokens = out[0, len(ids) :].tolist()
        metrics.num_generated_tokens = len(tokens)
        if streamer is not None and streamer.at is not None:
            metrics.ttft_seconds = streamer.at - t0
        if counters:
            metrics.target_calls = counters[0].n
            metrics.drafter_calls = counters[1].n if len(counters) > 1 else 0
        finish = "eos" if (self.eos_id is not None and tokens and tokens[-1] == self.eos_id) else "length"
        text = self.like.engine.tokenizer.decode(tokens, skip_special_tokens=True)
        return Generation(text, tokens, len(ids), finish, metrics, [])


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def hf_peers(rows: list) -> list:
    """Assisted generation on the first lossless hf-model policy (else the first hf-model one); prompt lookup."""
    ours = [r for r in rows if r.kind == "policy"]
    with_model = [r for r in ours if r.drafter_model is not None and r.policy.mode != "target"]
    spec = [r for r in with_model if r.policy.mode == "speculative" and r.policy.rule.name == "none"]
    peers = []
    like = (spec or with_model or [None])[0]
    if like is not None:
        peers.append(HFPeerRow(HF_ASSISTED, like, assistant=like.drafter_model))
        peers.append(HFPeerRow(HF_ASSISTED_DEFAULT, like, assistant=like.drafter_model, transformers_defaults=True))
    ngram = [
        r
        for r in ours
        if r.policy.drafter is not None and r.policy.drafter.plugin == "ngram" and r.policy.mode == "speculative"
    ]
    base = ngram[0] if ngram else (like or next((r for r in ours if r.policy.mode == "target"), ours[0]))
    max_ngram = int(ngram[0].policy.drafter.options.get("max_ngram", 3)) if ngram else 3
    peers.append(HFPeerRow(HF_LOOKUP, base, lookup_ngram=max_ngram))
    return peers
