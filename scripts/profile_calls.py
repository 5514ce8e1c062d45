"""Per-call latency, transformers' forward against cascade's lean one, per architecture (issue 14).

GPT-2 is the shipped pair (models/tiny drafter, models/target). Llama and Qwen2 are models of the
same shapes (width, depth, heads, vocabulary; Llama and Qwen2 with half as many KV heads) built
from configs with random weights: timing does not depend on what the weights say. Each pair runs
`cascade bench --calls 6` (one thread) on the first held-out prompt; the tables go to
docs/results/calls/. Usage: .venv/bin/python scripts/profile_calls.py  (about 5 minutes)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs/results/calls"
SHAPES = {"tiny": dict(hidden=128, layers=4, heads=4), "target": dict(hidden=512, layers=8, heads=8)}


def build(arch: str, shape: dict, out: Path) -> Path:
    common = dict(
        vocab_size=8192,
        max_position_embeddings=512,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        hidden_size=shape["hidden"],
        intermediate_size=4 * shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"] // 2,
        tie_word_embeddings=False,
    )
    config = LlamaConfig(**common) if arch == "llama" else Qwen2Config(use_sliding_window=False, **common)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    for f in (ROOT / "models/target").glob("tokenizer*"):
        shutil.copy(f, out / f.name)
    return out


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = {"gpt2": (ROOT / "models/target", ROOT / "models/tiny")}
        for arch in ("llama", "qwen2"):
            pairs[arch] = (
                build(arch, SHAPES["target"], Path(tmp) / arch / "target"),
                build(arch, SHAPES["tiny"], Path(tmp) / arch / "tiny"),
            )
        for arch, (target, tiny) in pairs.items():
            policy = Path(tmp) / f"{arch}.yaml"
            policy.write_text(
                yaml.safe_dump(
                    {
                        "name": f"{arch}-tiny-drafter",
                        "target": {"model": str(target), "dtype": "float32"},
                        "drafter": {"plugin": "hf-model", "options": {"model": str(tiny)}},
                        "mode": "speculative",
                    }
                )
            )
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cascade.cli",
                    "bench",
                    str(policy),
                    "--calls",
                    "6",
                    "--prompts",
                    str(ROOT / "prompts/stdlib-heldout.jsonl"),
                    "--limit",
                    "1",
                    "--repeats",
                    "15",
                    "--threads",
                    "1",
                    "--no-store",
                    "--json",
                    str(OUT / f"{arch}.json"),
                ],
                capture_output=True,
                text=True,
            )
            if run.returncode:
                print(run.stderr, file=sys.stderr)
                return run.returncode
            (OUT / f"{arch}.txt").write_text(run.stdout)
            print(run.stdout, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
