"""Extend a shipped family member's context (GPT-2's learned positions) by continued training.

`cascade zoo extend target --positions 2560 --minutes 40` grows the position table from 512 rows
to 2560 and trains only the new rows, on windows of `positions` tokens cut from the long files of
the training split. Every other weight, and the first 512 rows, stay frozen (their gradients are
masked and they get no weight decay), so on contexts up to the old length the extended model is
the old model bit for bit: every figure measured on short prompts (drafters' agreement, learned
rules, the EAGLE head trained on the target's features) still holds.

New rows start as copies of the old table's last PERIOD rows, repeated (Longformer extended
RoBERTa's learned positions by copying them; the first rows are not repeated because position 0 is
special: it is where every file starts). Measured before any training, on the target's held-out
windows: a period of 64 rows gave loss 3.95 / 4.08 with 1024 / 2048 tokens of context, 128 rows
3.97 / 4.07, 256 rows 4.00 / 4.08, one constant row 4.26 / 4.44 (3.996 with 512). Only positions at
or past the old length get a loss: no other token's loss depends on the new rows. Every few minutes
the loss at the longest context is measured on validation windows (long training files kept out of
the training windows) and the best table so far is the one kept.

Held-out loss is reported with 512, 1024 and 2048 tokens of context: the mean next-token loss of
the same tokens (the 256 before position 2048 of each long held-out file) predicted from that many
tokens before them, so a model that reads its long context well shows a lower loss at longer
contexts. Checkpoints are safetensors + JSON (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cascade.zoo import data

PERIOD = 64  # new position rows start as the old table's last PERIOD rows, repeated
VALIDATION_EVERY = 20  # every 20th long training file is kept out of training, for choosing the best table
CONTEXTS = (512, 1024, 2048)  # held-out loss is reported with this much context
TAIL = 256  # ... over the last TAIL tokens of each window


@dataclass(frozen=True)
class ExtendSettings:
    positions: int = 2560
    lr: float = 5e-4
    batch: int = 2  # windows of `positions` tokens per step
    minutes: float | None = None
    tokens: int | None = None
    seed: int = 0


@dataclass
class Progress:
    step: int = 0
    tokens_seen: int = 0
    seconds: float = 0.0
    last_loss: float = float("nan")


@dataclass(frozen=True)
class LongCorpus:
    """Token ids of one split's files, concatenated, with each file's [start, end) (EOS excluded)."""

    ids: np.ndarray  # (N,) uint16
    spans: np.ndarray  # (F, 2) int64

    def long_spans(self, length: int) -> np.ndarray:
        return self.spans[(self.spans[:, 1] - self.spans[:, 0]) >= length]


def encode_split(tokenizer: Any, files: list[data.SourceFile]) -> LongCorpus:
    eos = tokenizer.convert_tokens_to_ids(data.EOS)
    rows = tokenizer([f.text for f in files], add_special_tokens=False)["input_ids"]
    ids, spans, at = [], [], 0
    for row in rows:
        spans.append((at, at + len(row)))
        ids.extend(row)
        ids.append(eos)
        at += len(row) + 1
    return LongCorpus(np.asarray(ids, dtype=np.uint16), np.asarray(spans, dtype=np.int64).reshape(-1, 2))


def corpus_folder(tokenizer: Any, work: Path) -> Path:
    return work / f"long-{hashlib.sha1(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:12]}"


def corpora(tokenizer: Any, work: Path, log: Callable[[str], None]) -> tuple[LongCorpus, LongCorpus]:
    """Train and held-out splits in this tokenizer, cached under `work` (keyed by the vocabulary)."""
    folder = corpus_folder(tokenizer, work)
    if not (folder / "heldout.npz").exists():
        train, held = data.split_files(data.stdlib_files())
        folder.mkdir(parents=True, exist_ok=True)
        for name, files in (("train", train), ("heldout", held)):
            c = encode_split(tokenizer, files)
            np.savez(folder / f"{name}.tmp.npz", ids=c.ids, spans=c.spans)
            os.replace(folder / f"{name}.tmp.npz", folder / f"{name}.npz")
        log(f"corpus: {len(train)} train, {len(held)} held-out files (Python {data.python_version()})")
    out = []
    for name in ("train", "heldout"):
        z = np.load(folder / f"{name}.npz", allow_pickle=False)
        out.append(LongCorpus(z["ids"], z["spans"]))
    return out[0], out[1]


def split_validation(corpus: LongCorpus, length: int) -> tuple[LongCorpus, LongCorpus]:
    """(training, validation): every VALIDATION_EVERY-th file that holds a `length`-token window is validation."""
    long = np.flatnonzero((corpus.spans[:, 1] - corpus.spans[:, 0]) >= length)
    held = np.zeros(len(corpus.spans), dtype=bool)
    held[long[::VALIDATION_EVERY]] = True
    return LongCorpus(corpus.ids, corpus.spans[~held]), LongCorpus(corpus.ids, corpus.spans[held])


def windows(corpus: LongCorpus, length: int, batch: int, gen: np.random.Generator) -> torch.Tensor:
    """`batch` windows of `length` tokens, each inside one file, drawn uniformly over all such windows."""
    spans = corpus.long_spans(length)
    if len(spans) == 0:
        raise ValueError(f"no training file has {length} tokens: ask for fewer positions")
    counts = spans[:, 1] - spans[:, 0] - length + 1
    picks = gen.choice(len(spans), size=batch, p=counts / counts.sum())
    starts = [spans[i, 0] + gen.integers(0, counts[i]) for i in picks]
    return torch.from_numpy(np.stack([corpus.ids[s : s + length] for s in starts]).astype(np.int64))  # (B, T)


def grow_positions(model: Any, positions: int) -> int:
    """Replace wpe (P, d) by a (positions, d) table whose first P rows are the old ones; returns P."""
    wpe = model.transformer.wpe
    old, d = wpe.weight.shape
    if positions <= old:
        raise ValueError(f"the model already has {old} positions; ask for more")
    period = min(PERIOD, old)
    grown = torch.empty(positions, d, dtype=wpe.weight.dtype)
    grown[:old] = wpe.weight.data
    reps = torch.arange(positions - old) % period + old - period  # the last `period` rows, repeated
    grown[old:] = wpe.weight.data[reps]
    model.transformer.wpe = torch.nn.Embedding.from_pretrained(grown, freeze=False)
    model.config.n_positions = positions
    return old


def tail_loss(model: Any, ids: torch.Tensor, start: int) -> torch.Tensor:
    """Mean next-token loss of the tokens predicted from positions >= start. (B, T) -> ()"""
    h = model.transformer(input_ids=ids).last_hidden_state[:, start - 1 : -1]  # (B, T - start, d)
    logits = model.lm_head(h).float()  # (B, T - start, V)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, start:].flatten())


@torch.no_grad()
def heldout_losses(model: Any, corpus: LongCorpus, max_windows: int = 24, contexts=CONTEXTS) -> dict[str, float]:
    """{context: mean loss of the same tokens (the TAIL tokens before position max(CONTEXTS) of each long file)
    predicted from that many tokens of context}: only the context's length differs between the columns."""
    model.eval()
    limit = model.config.n_positions
    ends = corpus.long_spans(max(CONTEXTS))[:max_windows, 0] + max(CONTEXTS)  # the same tokens for every model
    out = {}
    for ctx in (c for c in contexts if c <= limit):
        losses = [
            tail_loss(model, torch.from_numpy(corpus.ids[e - ctx : e].astype(np.int64))[None], ctx - TAIL).item()
            for e in ends
        ]
        out[str(ctx)] = round(float(np.mean(losses)), 4)
    model.train()
    return out


def validation_loss(model: Any, corpus: LongCorpus) -> float:
    return heldout_losses(model, corpus, max_windows=12, contexts=(max(CONTEXTS),))[str(max(CONTEXTS))]


def extend(name: str, models_dir: Path, work: Path, s: ExtendSettings, log: Callable[[str], None] = print) -> Path:
    from transformers import AutoTokenizer, GPT2LMHeadModel

    if s.minutes is None and s.tokens is None:
        raise ValueError("give a budget: --minutes or --tokens")
    src = models_dir / name
    model = GPT2LMHeadModel.from_pretrained(src, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src)
    train_c, held_c = corpora(tok, work, log)
    train_c, val_c = split_validation(train_c, max(CONTEXTS))
    before = heldout_losses(model, held_c)
    old = grow_positions(model, s.positions)
    untrained = heldout_losses(model, held_c)
    log(
        f"{name}: {old} -> {s.positions} positions; held-out loss before {before}, untrained rows {untrained}; "
        f"{int(train_c.long_spans(s.positions).shape[0])} training files hold a {s.positions}-token window"
    )
    for p in model.parameters():
        p.requires_grad_(False)
    table = model.transformer.wpe.weight
    table.requires_grad_(True)
    table.register_hook(lambda g: torch.cat([torch.zeros_like(g[:old]), g[old:]]))  # the old rows stay as they were
    opt = torch.optim.AdamW([table], lr=s.lr, betas=(0.9, 0.95), weight_decay=0.0)
    ckpt = work / f"{name}-extend-{s.positions}"
    prog = _resume(ckpt, table, opt, s, log)
    gen = np.random.default_rng([s.seed, prog.step])

    def frac() -> float:
        return max(
            prog.seconds / (s.minutes * 60) if s.minutes else 0.0, prog.tokens_seen / s.tokens if s.tokens else 0.0
        )

    best = (validation_loss(model, val_c), table.detach().clone())
    log(f"{name}: validation loss with {max(CONTEXTS)} tokens of context {best[0]:.4f} at the start")
    model.train()
    last_save = last_log = time.perf_counter()
    losses: list[float] = []
    while frac() < 1.0:
        t0 = time.perf_counter()
        for g in opt.param_groups:  # warm-up, then cosine to a tenth
            g["lr"] = s.lr * min(1.0, (prog.step + 1) / 20) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(frac(), 1.0))))
        x = windows(train_c, s.positions, s.batch, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = tail_loss(model, x, old)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        prog.step += 1
        prog.tokens_seen += x.numel()
        now = time.perf_counter()
        prog.seconds += now - t0
        if now - last_log > 30:
            prog.last_loss = float(np.mean(losses[-20:]))
            log(
                f"{name}: step {prog.step} loss past {old} {prog.last_loss:.3f} {prog.tokens_seen / 1e6:.2f}M tok "
                f"{x.numel() / (now - t0):,.0f} tok/s {100 * frac():.1f}% of budget"
            )
            last_log = now
        if now - last_save > 300 or frac() >= 1.0:
            _checkpoint(ckpt, table, opt, prog, s)
            val = validation_loss(model, val_c)
            log(f"{name}: validation loss {val:.4f} (best {min(val, best[0]):.4f})")
            if val < best[0]:
                best = (val, table.detach().clone())
            last_save = time.perf_counter()
    with torch.no_grad():
        table.copy_(best[1])  # the best table on validation
    after = heldout_losses(model, held_c)
    log(f"{name}: done; held-out loss by context {after}")
    losses = {
        "heldout_loss_by_context_before": before,
        "heldout_loss_by_context_untrained": untrained,
        "heldout_loss_by_context": after,
    }
    return _export(name, model, tok, src, models_dir, s, prog, old, losses)


def remeasure(name: str, models_dir: Path, work: Path, log: Callable[[str], None] = print) -> dict:
    """Measure an extended member's held-out losses by context again (and those of its untrained rows, rebuilt
    from its first rows) and rewrite them in its card: `cascade zoo extend NAME --remeasure`."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    folder = models_dir / name
    card = json.loads((folder / "card.json").read_text())
    if "long_context" not in card:
        raise ValueError(f"{folder} was not extended: run cascade zoo extend {name} first")
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32)
    _, held_c = corpora(AutoTokenizer.from_pretrained(folder), work, log)
    long = card["long_context"]
    old = long["from_positions"]
    after = heldout_losses(model, held_c)
    table = model.transformer.wpe.weight
    with torch.no_grad():
        table[old:] = table[:old][torch.arange(table.shape[0] - old) % min(PERIOD, old) + old - min(PERIOD, old)]
    long.update(
        heldout_loss_by_context_before={str(old): after[str(old)]},
        heldout_loss_by_context_untrained=heldout_losses(model, held_c),
        heldout_loss_by_context=after,
        loss_measure=f"mean next-token loss of the {TAIL} tokens before position {max(CONTEXTS)} of long "
        "held-out files, predicted from this many tokens of context",
    )
    from cascade.zoo.train import model_card_markdown

    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (folder / "README.md").write_text(model_card_markdown(card))
    log(
        f"{name}: {long['heldout_loss_by_context_before']} before, {long['heldout_loss_by_context_untrained']} "
        f"untrained, {after} trained"
    )
    return long


def _checkpoint(
    folder: Path, table: torch.Tensor, opt: torch.optim.Optimizer, prog: Progress, s: ExtendSettings
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = opt.state[table]
    tensors = {"table": table.detach().contiguous()}
    if state:
        tensors |= {"exp_avg": state["exp_avg"], "exp_avg_sq": state["exp_avg_sq"]}
    save_file(tensors, folder / "state.tmp.safetensors")
    os.replace(folder / "state.tmp.safetensors", folder / "state.safetensors")
    meta = {
        "progress": asdict(prog),
        "settings": {k: v for k, v in asdict(s).items() if k not in ("minutes", "tokens")},
        "adam_step": float(state["step"]) if state else 0.0,
    }
    (folder / "progress.tmp.json").write_text(json.dumps(meta))
    os.replace(folder / "progress.tmp.json", folder / "progress.json")


def _resume(
    folder: Path, table: torch.Tensor, opt: torch.optim.Optimizer, s: ExtendSettings, log: Callable[[str], None]
) -> Progress:
    if not (folder / "progress.json").exists():
        return Progress()
    meta = json.loads((folder / "progress.json").read_text())
    settings = {k: v for k, v in asdict(s).items() if k not in ("minutes", "tokens")}
    if meta["settings"] != settings:
        raise ValueError(f"{folder} holds a run with other settings ({meta['settings']}); remove it to start over")
    tensors = load_file(folder / "state.safetensors")
    with torch.no_grad():
        table.copy_(tensors["table"])
    if "exp_avg" in tensors:
        opt.state[table] = {
            "step": torch.tensor(meta["adam_step"]),
            "exp_avg": tensors["exp_avg"],
            "exp_avg_sq": tensors["exp_avg_sq"],
        }
    prog = Progress(**meta["progress"])
    log(f"resumed at step {prog.step}, {prog.tokens_seen:,} tokens, {prog.seconds / 60:.1f} min")
    return prog


def _export(
    name: str,
    model: Any,
    tok: Any,
    src: Path,
    models_dir: Path,
    s: ExtendSettings,
    prog: Progress,
    old: int,
    losses: dict[str, dict[str, float]],
) -> Path:
    card = json.loads((src / "card.json").read_text()) if (src / "card.json").exists() else {"name": f"cascade-{name}"}
    budget = " ".join(
        f for f in (f"--tokens {s.tokens}" if s.tokens else "", f"--minutes {s.minutes}" if s.minutes else "") if f
    )
    card["long_context"] = {
        "positions": s.positions,
        "from_positions": old,
        "trained": f"position rows {old}-{s.positions - 1} only; every other weight frozen",
        "tokens_seen": prog.tokens_seen,
        "steps": prog.step,
        "training_minutes": round(prog.seconds / 60, 1),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}",
        **losses,
        "loss_measure": f"mean next-token loss of the {TAIL} tokens before position {max(CONTEXTS)} of long held-out "
        "files, predicted from this many tokens of context",
        "command": f"cascade zoo extend {name} --positions {s.positions} {budget} --seed {s.seed}",
    }
    tmp = models_dir / f".{name}.extending"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in src.iterdir():  # tokenizer, generation config, ...
        if f.is_file() and f.name not in ("model.safetensors", "config.json", "card.json", "README.md"):
            shutil.copy2(f, tmp / f.name)
    tok.model_max_length = s.positions
    tok.save_pretrained(tmp)
    model.config.dtype = "float16"
    model.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    (tmp / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    from cascade.zoo.train import model_card_markdown

    (tmp / "README.md").write_text(model_card_markdown(card))
    shutil.rmtree(src)
    os.replace(tmp, src)
    return src
