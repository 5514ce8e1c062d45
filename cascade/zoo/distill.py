"""Distil a small same-tokenizer drafter for any causal-LM target (`cascade zoo distill`).

A drafter earns its keep by agreeing with the target, not by modelling the corpus, so it
is trained on the target's distributions (knowledge distillation, as DistillSpec argues
for speculative decoding): for windows of the training split, the student minimises the
forward KL divergence KL(p ‖ q) from the target's full next-token distribution p to its
own q at every position. The target runs in no-grad, and both models in bfloat16 autocast
on CPUs where that is measurably faster, so each training token costs one target forward.

The student is Llama-shaped (RMSNorm, RoPE with the target's θ, SwiGLU, grouped KV heads,
tied embeddings), so it runs on cascade's lean forward. Its embedding starts as the target's
embedding projected on its leading principal directions, so the vocabulary (49152 tokens
for SmolLM2: most of a few-million-parameter student) begins with the target's geometry
instead of noise.

Checkpoints (safetensors for the weights, `torch.load(weights_only=True)` for the
optimiser) every few minutes; a rerun with the same output resumes. The result is an
ordinary Hugging Face folder with a card: the command, held-out KL and loss, and greedy
top-1 agreement with the target.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cascade.errors import CascadeError
from cascade.zoo import data
from cascade.zoo.train import Progress


@dataclass(frozen=True)
class DistillSettings:
    minutes: float | None = None
    tokens: int | None = None
    hidden: int = 128
    layers: int = 6
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    seq_len: int = 256
    batch: int = 8
    lr: float = 2e-3
    warmup: int = 30
    seed: int = 0
    eval_windows: int = 24


def student_config(target_config: Any, s: DistillSettings):
    from transformers import LlamaConfig

    rope = getattr(target_config, "rope_parameters", None) or {}
    theta = float(rope.get("rope_theta", getattr(target_config, "rope_theta", 10000.0)))
    return LlamaConfig(
        vocab_size=target_config.vocab_size,
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        max_position_embeddings=getattr(target_config, "max_position_embeddings", 2048),
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        tie_word_embeddings=True,
        bos_token_id=target_config.bos_token_id,
        eos_token_id=target_config.eos_token_id,
        pad_token_id=getattr(target_config, "pad_token_id", None),
        rms_norm_eps=1e-5,
    )


def init_student(target: Any, s: DistillSettings):
    """A fresh student whose embedding is the target's, projected on its `hidden` leading principal
    directions and scaled to the initialiser's spread."""
    from transformers import LlamaForCausalLM

    student = LlamaForCausalLM(student_config(target.config, s))
    e = target.get_input_embeddings().weight.detach().float()  # (V, D)
    centred = e - e.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred[:: max(1, len(e) // 8192)], full_matrices=False)  # directions from a sample
    projected = centred @ v[: s.hidden].T  # (V, hidden)
    projected *= student.config.initializer_range * 5 / projected.std()
    with torch.no_grad():
        student.get_input_embeddings().weight.copy_(projected)
    return student


def teacher_log_probs(target: Any, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = target(input_ids=x).logits
    return logits.float().log_softmax(-1)


def kl_loss(student: Any, x: torch.Tensor, log_p: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """KL(p ‖ q) per position, averaged: Σ_v p (log p − log q)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = student(input_ids=x).logits
    log_q = logits.float().log_softmax(-1)
    return F.kl_div(log_q.flatten(0, 1), log_p.flatten(0, 1), log_target=True, reduction="batchmean")


@torch.no_grad()
def evaluate(student: Any, target: Any, tokens: np.ndarray, s: DistillSettings) -> dict[str, float]:
    """On fixed held-out windows: KL(p ‖ q), the student's and target's next-token loss on the text, and
    how often the student's argmax is the target's (the ceiling of greedy acceptance at one token)."""
    student.eval()
    gen = np.random.default_rng(12345)
    kl = ce_s = ce_t = agree = 0.0
    n = 0
    for _ in range(max(1, s.eval_windows // s.batch)):
        x = data.random_windows(tokens, s.batch, s.seq_len, gen)
        log_p = target(input_ids=x).logits.float().log_softmax(-1)
        log_q = student(input_ids=x).logits.float().log_softmax(-1)
        kl += float((log_p.exp() * (log_p - log_q)).sum(-1).mean())
        nxt = x[:, 1:]
        ce_s += float(-log_q[:, :-1].gather(-1, nxt[..., None]).mean())
        ce_t += float(-log_p[:, :-1].gather(-1, nxt[..., None]).mean())
        agree += float((log_q.argmax(-1) == log_p.argmax(-1)).float().mean())
        n += 1
    student.train()
    return {
        "heldout_kl": round(kl / n, 4),
        "heldout_loss": round(ce_s / n, 4),
        "target_heldout_loss": round(ce_t / n, 4),
        "top1_agreement": round(agree / n, 4),
    }


def faster_in_bf16(target: Any, s: DistillSettings) -> bool:
    x = torch.zeros(2, s.seq_len, dtype=torch.long)

    def best(bf16: bool) -> float:
        times = []
        for _ in range(2):
            t = time.perf_counter()
            teacher_log_probs(target, x, bf16)
            times.append(time.perf_counter() - t)
        return min(times)

    return best(True) < 0.8 * best(False)


def lr_at(s: DistillSettings, step: int, frac: float) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    return s.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def distill(target_dir: Path, out: Path, work: Path, s: DistillSettings, log=print, split=None) -> Path:
    """Train a student on `target_dir`'s distributions over the stdlib corpus (or `split`: training and
    held-out `data.SourceFile`s) within the budget, resuming from `work`'s checkpoint; write it to `out`."""
    from safetensors.torch import load_file, save_file

    from cascade.runtime.models import load_model, load_tokenizer

    if s.minutes is None and s.tokens is None:
        raise CascadeError("give a budget: --minutes or --tokens")
    torch.manual_seed(s.seed)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(str(target_dir))
    target = load_model(str(target_dir), torch.float32).requires_grad_(False)
    train_ids, held_ids, meta = data.cached_corpus(tokenizer, work, log, split)
    student = init_student(target, s)
    opt = torch.optim.AdamW(student.parameters(), lr=s.lr, betas=(0.9, 0.95), weight_decay=0.05)
    weights_f, opt_f, prog_f = work / "student.safetensors", work / "optimizer.pt", work / "progress.json"
    prog = Progress()
    if weights_f.exists() and prog_f.exists():
        student.load_state_dict(load_file(weights_f), strict=False)
        student.tie_weights()
        opt.load_state_dict(torch.load(opt_f, weights_only=True))
        prog = Progress(**json.loads(prog_f.read_text()))
        log(f"resumed at step {prog.step}, {prog.tokens_seen:,} tokens, {prog.seconds / 60:.1f} min")
    gen = np.random.default_rng([s.seed, prog.step])
    n_params = sum(p.numel() for p in student.parameters())
    bf16 = faster_in_bf16(target, s)
    log(f"student: {n_params / 1e6:.2f}M params; target teacher in bf16 autocast={bf16}; {len(train_ids):,} tokens")

    def frac() -> float:
        return max(
            prog.seconds / (s.minutes * 60) if s.minutes else 0.0, prog.tokens_seen / s.tokens if s.tokens else 0.0
        )

    def save() -> None:
        state = {k: v.contiguous() for k, v in student.state_dict().items() if k != "lm_head.weight"}
        save_file(state, str(weights_f) + ".tmp")
        torch.save(opt.state_dict(), str(opt_f) + ".tmp")
        os.replace(str(weights_f) + ".tmp", weights_f)
        os.replace(str(opt_f) + ".tmp", opt_f)
        prog_f.write_text(json.dumps(asdict(prog)))

    student.train()
    last_log = last_save = time.perf_counter()
    losses: list[float] = []
    while frac() < 1.0:
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(s, prog.step, frac())
        x = data.random_windows(train_ids, s.batch, s.seq_len, gen)
        loss = kl_loss(student, x, teacher_log_probs(target, x, bf16), bf16)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        prog.step += 1
        prog.tokens_seen += x.numel()
        now = time.perf_counter()
        prog.seconds += now - t0
        if now - last_log > 60:
            prog.last_loss = float(np.mean(losses[-20:]))
            log(
                f"step {prog.step} KL {prog.last_loss:.3f} {prog.tokens_seen / 1e6:.2f}M tok "
                f"{x.numel() / (now - t0):,.0f} tok/s {100 * frac():.0f}% of budget"
            )
            last_log = now
        if now - last_save > 300:
            save()
            last_save = now
    save()
    scores = evaluate(student, target, held_ids, s)
    log(f"done: {scores}")
    return export(student, tokenizer, target_dir, out, prog, scores, meta, n_params, s)


def export(student, tokenizer, target_dir, out: Path, prog: Progress, scores, meta, n_params, s) -> Path:
    if out.exists():
        shutil.rmtree(out)
    student.config.dtype = "float16"
    student.to(torch.float16).save_pretrained(out, safe_serialization=True)
    student.to(torch.float32)
    tokenizer.save_pretrained(out)
    budget = " ".join(
        f for f in (f"--minutes {s.minutes}" if s.minutes else "", f"--tokens {s.tokens}" if s.tokens else "") if f
    )
    card = {
        "name": out.name,
        "architecture": "LlamaForCausalLM (distilled drafter)",
        "target": str(target_dir),
        "parameters": n_params,
        "objective": "forward KL(p_target || q_student) over the full vocabulary, teacher-forced on the corpus",
        "tokens_seen": prog.tokens_seen,
        "steps": prog.step,
        "training_minutes": round(prog.seconds / 60, 1),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}",
        "corpus": f"{meta['corpus']}, Python {meta['python']}, {meta['train_files']} training files",
        **scores,
        "settings": {k: v for k, v in asdict(s).items() if v is not None},
        "command": f"cascade zoo distill --target {target_dir} --out {out} {budget} --seed {s.seed}",
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    rows = "\n".join(f"| {k} | {v} |" for k, v in card.items() if not isinstance(v, dict))
    (out / "README.md").write_text(
        f"# {card['name']}\n\nA drafter distilled from `{target_dir}` by `cascade zoo distill` "
        f"(cascade/zoo/distill.py): it shares the target's tokenizer and was trained on the target's "
        f"next-token distributions.\n\n| field | value |\n|---|---|\n{rows}\n"
    )
    return out
