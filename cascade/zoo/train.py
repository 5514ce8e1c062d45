"""Train the shipped model family (GPT-2 architecture) on the stdlib corpus.

One command trains one member; all members share one tokenizer, built first.
Stops at a time or token budget, checkpoints every few minutes and resumes from
the last checkpoint, and writes a standard Hugging Face folder (config,
fp16 safetensors, tokenizer, generation config, model card).

The learning rate follows warm-up then cosine decay over the *budget* fraction
spent (time or tokens, whichever is further along), so a resumed run continues
the same schedule.
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

import numpy as np
import torch

from cascade.zoo import data

VOCAB_SIZE = 8192  # small vocabulary: at 16k the embedding would be most of a 2M model
SEQ_LEN = 512  # training context; also the models' n_positions


@dataclass(frozen=True)
class Size:
    n_embd: int
    n_layer: int
    n_head: int
    lr: float  # peak learning rate
    batch: int  # sequences per step


FAMILY = {
    "tiny": Size(n_embd=128, n_layer=4, n_head=4, lr=2e-3, batch=16),  # ~1.9M params
    "mid": Size(n_embd=256, n_layer=8, n_head=8, lr=1.6e-3, batch=16),  # ~8.5M
    "target": Size(n_embd=512, n_layer=8, n_head=8, lr=1.2e-3, batch=16),  # ~29.7M: hours, not minutes, at 6e-4
}


@dataclass
class Progress:
    step: int = 0
    tokens_seen: int = 0
    seconds: float = 0.0  # training wall time summed over resumes
    last_loss: float = float("nan")


def build_config(size: Size):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=SEQ_LEN,
        n_embd=size.n_embd,
        n_layer=size.n_layer,
        n_head=size.n_head,
        bos_token_id=0,  # GPT-2's default 50256 is out of range for our vocabulary
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=True,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def prepare_corpus(work: Path, log=print):
    """Tokenizer + token arrays, built once and cached under `work`."""
    tok_dir = work / "tokenizer"
    train_f, held_f = work / "train.npy", work / "heldout.npy"
    from transformers import AutoTokenizer

    if not (tok_dir.exists() and train_f.exists() and held_f.exists()):
        files = data.stdlib_files()
        train, held = data.split_files(files)
        log(f"corpus: {len(train)} train files, {len(held)} held-out files (Python {data.python_version()})")
        tok = data.train_tokenizer(train, VOCAB_SIZE, tok_dir)
        np.save(train_f, data.encode_files(tok, train))
        np.save(held_f, data.encode_files(tok, held))
        (work / "split.json").write_text(
            json.dumps({"train": [f.relpath for f in train], "heldout": [f.relpath for f in held]})
        )
    tok = AutoTokenizer.from_pretrained(tok_dir)
    return tok, np.load(train_f), np.load(held_f)


def batch_from(tokens: np.ndarray, batch: int, gen: np.random.Generator) -> torch.Tensor:
    starts = gen.integers(0, len(tokens) - SEQ_LEN - 1, size=batch)
    rows = np.stack([tokens[s : s + SEQ_LEN] for s in starts]).astype(np.int64)
    return torch.from_numpy(rows)  # (B, T)


@torch.no_grad()
def heldout_loss(model, tokens: np.ndarray, max_windows: int = 128) -> float:
    """Mean next-token cross-entropy (nats) over fixed non-overlapping windows."""
    model.eval()
    n = min(max_windows, (len(tokens) - 1) // SEQ_LEN)
    total, count = 0.0, 0
    for i in range(0, n, 8):
        rows = [tokens[j * SEQ_LEN : (j + 1) * SEQ_LEN] for j in range(i, min(n, i + 8))]
        x = torch.from_numpy(np.stack(rows).astype(np.int64))
        out = model(input_ids=x, labels=x)
        k = x.numel() - x.shape[0]
        total += out.loss.item() * k
        count += k
    model.train()
    return total / max(count, 1)


def pick_autocast(model, gen) -> bool:
    """bf16 autocast on CPU only where it is measurably faster on this machine."""
    x = batch_from(np.arange(SEQ_LEN * 4, dtype=np.uint16) % VOCAB_SIZE, 4, gen)

    def timed(bf16: bool) -> float:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(input_ids=x, labels=x).loss.backward()
            best = min(best, time.perf_counter() - t)
        model.zero_grad(set_to_none=True)
        return best

    return timed(True) < 0.9 * timed(False)


def lr_at(size: Size, step: int, frac: float, warmup: int = 60) -> float:
    if step < warmup:
        return size.lr * (step + 1) / warmup
    return size.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def train(
    name: str,
    out_root: Path,
    work: Path,
    minutes: float | None = None,
    tokens: int | None = None,
    seed: int = 0,
    log=print,
) -> Path:
    if minutes is None and tokens is None:
        raise ValueError("give a budget: --minutes or --tokens")
    size = FAMILY[name]
    torch.manual_seed(seed)
    work.mkdir(parents=True, exist_ok=True)
    tok, train_ids, held_ids = prepare_corpus(work, log)
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel(build_config(size))
    opt = torch.optim.AdamW(model.parameters(), lr=size.lr, betas=(0.9, 0.95), weight_decay=0.1)
    ckpt = work / f"{name}.ckpt"
    prog = Progress()
    gen = np.random.default_rng(seed)
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)  # tensors, numbers and dicts: no pickle
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        prog = Progress(**state["progress"])
        gen = np.random.default_rng([seed, prog.step])
        log(f"{name}: resumed at step {prog.step}, {prog.tokens_seen:,} tokens, {prog.seconds / 60:.1f} min")
    n_params = sum(p.numel() for p in model.parameters())
    bf16 = pick_autocast(model, np.random.default_rng(1))
    log(f"{name}: {n_params / 1e6:.2f}M params, bf16 autocast={bf16}, {len(train_ids):,} train tokens")

    def frac() -> float:
        f_time = prog.seconds / (minutes * 60) if minutes else 0.0
        f_tok = prog.tokens_seen / tokens if tokens else 0.0
        return max(f_time, f_tok)

    def save_ckpt():
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "progress": asdict(prog)}, tmp)
        os.replace(tmp, ckpt)

    model.train()
    last_save = last_log = time.perf_counter()
    losses: list[float] = []
    while frac() < 1.0:
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(size, prog.step, frac())
        x = batch_from(train_ids, size.batch, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        prog.step += 1
        prog.tokens_seen += x.numel()
        now = time.perf_counter()
        prog.seconds += now - t0
        if now - last_log > 30:
            prog.last_loss = float(np.mean(losses[-50:]))
            rate = x.numel() / (now - t0)
            log(
                f"{name}: step {prog.step} loss {prog.last_loss:.3f} "
                f"{prog.tokens_seen / 1e6:.2f}M tok {rate:,.0f} tok/s {100 * frac():.1f}% of budget"
            )
            last_log = now
        if now - last_save > 300:
            save_ckpt()
            last_save = now
    save_ckpt()
    loss = heldout_loss(model, held_ids)
    log(f"{name}: done, held-out loss {loss:.4f} (ppl {math.exp(loss):.2f})")
    return export(name, model, tok, work, out_root, prog, loss, n_params, minutes, tokens, seed)


def export(name, model, tok, work, out_root, prog, loss, n_params, minutes, tokens, seed) -> Path:
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    model.config.torch_dtype = "float16"
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    tok.save_pretrained(out)
    budget = " ".join(
        f for f in (f"--tokens {tokens}" if tokens else "", f"--minutes {minutes}" if minutes else "") if f
    )
    card = {
        "name": f"cascade-{name}",
        "architecture": "GPT2LMHeadModel",
        "parameters": n_params,
        "tokens_seen": prog.tokens_seen,
        "steps": prog.step,
        "training_minutes": round(prog.seconds / 60, 1),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}",
        "python_corpus": data.python_version(),
        "heldout_loss": round(loss, 4),
        "heldout_perplexity": round(math.exp(loss), 2),
        "learning_rate": FAMILY[name].lr,
        "command": f"cascade zoo train {name} {budget} --seed {seed}",
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "README.md").write_text(model_card_markdown(card))
    return out


def model_card_markdown(card: dict) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in card.items() if k != "name" and not isinstance(v, dict))
    text = (
        f"# {card['name']}\n\n"
        "A small GPT-2-style causal LM trained on the Python standard library source "
        "(code completion), shipped with cascade so every command runs offline.\n"
        "Held-out files are chosen by path hash (see `cascade/zoo/data.py`).\n\n"
        f"| field | value |\n|---|---|\n{rows}\n"
    )
    for k, v in card.items():  # later stages (e.g. long_context: `cascade zoo extend`), a table each
        if isinstance(v, dict):
            text += (
                f"\n## {k}\n\n| field | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in v.items()) + "\n"
            )
    return text
