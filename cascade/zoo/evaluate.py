"""Measure the shipped family: held-out loss, greedy agreement with the target, and τ.

- held-out loss: mean next-token cross-entropy over fixed windows of held-out files;
- agreement: how often a smaller model's greedy next token equals the target's, on
  the same held-out windows (the ceiling of greedy acceptance at block size 1);
- τ: mean acceptance length of lossless speculative decoding with each smaller
  model as drafter at block size 4, greedy, over the evaluation prompts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from cascade.zoo.train import SEQ_LEN, heldout_loss


def load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.no_grad()
def agreement(small, target, tokens: np.ndarray, windows: int = 16) -> float:
    same = total = 0
    for j in range(min(windows, (len(tokens) - 1) // SEQ_LEN)):
        x = torch.from_numpy(tokens[j * SEQ_LEN : (j + 1) * SEQ_LEN].astype(np.int64))[None]
        a = small(input_ids=x).logits.argmax(-1)
        b = target(input_ids=x).logits.argmax(-1)
        same += int((a == b).sum())
        total += a.numel()
    return same / total


def tau(models_dir: Path, drafter: str, prompts: list[str], block_size: int = 4, max_new_tokens: int = 64) -> float:
    from cascade.decode.engine import Engine
    from cascade.metrics import Metrics
    from cascade.policy import parse_policy

    policy = parse_policy(
        {
            "name": f"zoo-eval-{drafter}",
            "target": {"model": str(models_dir / "target"), "dtype": "float32", "device": "cpu"},
            "drafter": {"plugin": "hf-model", "options": {"model": str(models_dir / drafter)}},
            "mode": "speculative",
            "rule": {"name": "none"},
            "decoding": {
                "temperature": 0.0,
                "max_new_tokens": max_new_tokens,
                "schedule": {"name": "constant", "options": {"block_size": block_size}},
            },
        }
    )
    engine = Engine.from_policy(policy)
    runs = [engine.generate(p, record_decisions=False).metrics for p in prompts]
    return Metrics.total(runs).mean_acceptance_length


def heldout_tokens(models_dir: Path) -> np.ndarray:
    """The held-out files, tokenized with the family's own (shipped) tokenizer."""
    from transformers import AutoTokenizer

    from cascade.zoo import data

    _, held = data.split_files(data.stdlib_files())
    return data.encode_files(AutoTokenizer.from_pretrained(models_dir / "target"), held)


def evaluate(models_dir: Path, prompts_file: Path, names=("tiny", "mid", "target"), log=print) -> dict:
    held = heldout_tokens(models_dir)
    target = load(models_dir / "target")
    prompts = [json.loads(line)["prompt"] for line in prompts_file.read_text().splitlines() if line.strip()]
    out: dict[str, dict] = {}
    for name in names:
        model = target if name == "target" else load(models_dir / name)
        loss = heldout_loss(model, held)
        row = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "heldout_loss": round(loss, 4),
            "heldout_perplexity": round(math.exp(loss), 2),
        }
        if name != "target":
            row["greedy_agreement_with_target"] = round(agreement(model, target, held), 4)
            row["tau_lossless_block4"] = round(tau(models_dir, name, prompts), 3)
        out[name] = row
        log(f"{name}: {row}")
    return out


def markdown(results: dict) -> str:
    lines = [
        "| model | parameters | held-out loss | perplexity | greedy agreement with target | τ (lossless, γ=4) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['parameters'] / 1e6:.1f}M | {r['heldout_loss']:.3f} | {r['heldout_perplexity']:.1f} | "
            f"{r.get('greedy_agreement_with_target', '—')} | {r.get('tau_lossless_block4', '—')} |"
        )
    return "\n".join(lines)
