"""Training an EAGLE head on a target's features (`cascade eagle train`).

Data: random windows of the training split of the shipped corpus (`cascade.zoo.data`: the stdlib,
split by file), tokenised with the target's own tokenizer. The target runs inside each step
(frozen, no grad) to give the features f and its soft next-token distributions P = softmax(LMHead(f)).
Features are computed on the fly, not cached: a run at this scale sees each training token at most
about once, so a cache would be written once and read once (and take ~1 kB per token).

Objective (EAGLE-3 / HASS, not EAGLE-1's feature regression): token loss only, with the head
unrolled `steps` times on its own outputs ("training-time test"), as it drafts at depth 1..steps:

    step 0, index i:  input (f_i,       x_{i+1}) at position i       -> g^0_i, predicts x_{i+2}
    step k, index i:  input (g^{k-1}_i, x_{i+k+1}) at position i + k -> g^k_i, predicts x_{i+k+2}
    step k attends to the step-0 keys at j <= i (the real context) and to its own steps 1..k at i
    (the path of drafted ancestors): exactly what a depth-k tree node sees when drafting.

    L = sum_k 0.8^k * CE(P_{i+k+1}, softmax(LMHead(g^k_i)))      (soft targets: the target's distribution)

Checkpoints (safetensors + JSON, no pickle) every few minutes under `--work`; a rerun resumes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cascade import CascadeError
from cascade_eagle import features as T
from cascade_eagle.head import EagleHead, HeadConfig, default_config, init_weights, param_count, save_head

Split = tuple[list[Any], list[Any]]  # training and held-out `cascade.zoo.data.SourceFile`s
DECAY = 0.8  # weight of step k's loss: DECAY ** k (EAGLE-3)


@dataclass(frozen=True)
class TrainSettings:
    minutes: float | None = None
    tokens: int | None = None
    steps_ahead: int = 4  # unrolled drafting depth trained for
    batch: int = 8
    seq_len: int = 256
    lr: float = 1e-3
    warmup: int = 50
    seed: int = 0
    eval_windows: int = 64
    bf16: bool = True  # bf16 autocast in the training step: measured 2x faster than fp32 on this CPU


@dataclass
class Progress:
    step: int = 0
    tokens_seen: int = 0
    seconds: float = 0.0
    last_loss: float = float("nan")
    history: list[list[float]] = field(default_factory=list)  # [step, tokens, loss]


# ---------------------------------------------------------------------- the unrolled forward


def unrolled(head: EagleHead, feats: torch.Tensor, embeds: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """The head's outputs g^k for k = 0..steps-1 over indices i = 0..N-1, N = T - steps.

    feats (B, T, d) the target's features; embeds (B, T, d) the embeddings of the window's tokens.
    Returns `steps` tensors (B, N, d); g^k_i predicts the token at i + k + 2."""
    b, t, _ = feats.shape
    n = t - steps
    if n < 1:
        raise CascadeError(f"windows of {t} tokens are too short to unroll {steps} steps")
    base = torch.arange(n, device=feats.device).expand(b, n)  # (B, N)
    causal = torch.full((n, n), float("-inf"), device=feats.device, dtype=feats.dtype).triu(1)  # (N, N)
    outs: list[torch.Tensor] = []
    keys: list[tuple[torch.Tensor, torch.Tensor]] = []  # (K, V) of steps 0..k-1, each (B, H, N, c)
    inputs = feats[:, :n]
    for k in range(steps):
        h = head.project(inputs, embeds[:, k + 1 : k + 1 + n])  # (B, N, d)
        q, key, value = head.qkv_at(h, base + k)  # (B, H, N, c)
        keys.append((key, value))
        scale = 1 / math.sqrt(q.shape[-1])
        s0 = q @ keys[0][0].transpose(-1, -2) * scale + causal  # (B, H, N, N): the real context j <= i
        diag = [(q * kk).sum(-1, keepdim=True) * scale for kk, _ in keys[1:]]  # k x (B, H, N, 1): own path
        w = torch.softmax(torch.cat([s0, *diag], dim=-1), dim=-1)
        attended = w[..., :n] @ keys[0][1]  # (B, H, N, c)
        for s, (_, vv) in enumerate(keys[1:]):
            attended = attended + w[..., n + s : n + s + 1] * vv
        g = head.finish(h, attended)  # (B, N, d)
        outs.append(g)
        inputs = g
    return outs


def losses(
    head: EagleHead, target: Any, ids: torch.Tensor, steps: int
) -> tuple[torch.Tensor, list[float], list[float]]:
    """The weighted loss, and per step k its soft CE and its top-1 agreement with the target (no grad)."""
    with torch.no_grad():
        f = T.target_features(target, ids).float()  # (B, T, d)
        log_p = F.log_softmax(T.lm_head(target, f).float(), dim=-1)  # (B, T, V)
        e = T.embed(target, ids).float()
    n = ids.shape[1] - steps
    total = torch.zeros((), device=ids.device)
    ce, top1 = [], []
    for k, g in enumerate(unrolled(head, f, e, steps)):
        log_q = F.log_softmax(T.lm_head(target, g).float(), dim=-1)  # (B, N, V)
        p_k = log_p[:, k + 1 : k + 1 + n].exp()  # the target's distribution of x_{i+k+2}
        loss_k = -(p_k * log_q).sum(-1).mean()
        total = total + DECAY**k * loss_k
        ce.append(float(loss_k.detach()))
        top1.append(float((log_q.argmax(-1) == p_k.argmax(-1)).float().mean()))
    return total, ce, top1


# ---------------------------------------------------------------------- data


def corpus(
    tokenizer: Any, work: Path, log: Callable[[str], None], split: Split | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The training and held-out token arrays of the shipped corpus (or of `split`: train and held-out
    files), in the target's tokenizer, cached under `work`."""
    from cascade.zoo import data

    return data.cached_corpus(tokenizer, work, log, split)


def windows(tokens: np.ndarray, batch: int, seq_len: int, gen: np.random.Generator) -> torch.Tensor:
    """Random training windows (B, T) of the corpus (`cascade.zoo.data.random_windows`)."""
    from cascade.zoo import data

    return data.random_windows(tokens, batch, seq_len, gen)


@torch.no_grad()
def evaluate(head: EagleHead, target: Any, tokens: np.ndarray, s: TrainSettings) -> dict[str, list[float]]:
    """Held-out soft CE and top-1 agreement per depth over fixed windows (the same every time)."""
    head.eval()
    gen = np.random.default_rng(12345)
    ce_sum, top_sum, n = np.zeros(s.steps_ahead), np.zeros(s.steps_ahead), 0
    for _ in range(max(1, s.eval_windows // s.batch)):
        _, ce, top1 = losses(head, target, windows(tokens, s.batch, s.seq_len, gen), s.steps_ahead)
        ce_sum += ce
        top_sum += top1
        n += 1
    head.train()
    return {"ce": [round(float(v), 4) for v in ce_sum / n], "top1": [round(float(v), 4) for v in top_sum / n]}


# ---------------------------------------------------------------------- the loop


def train(
    target_dir: Path,
    out: Path,
    work: Path,
    s: TrainSettings,
    log: Callable[[str], None] = print,
    split: Split | None = None,
) -> Path:
    from cascade import load_model, load_tokenizer

    if s.minutes is None and s.tokens is None:
        raise CascadeError("give a budget: --minutes or --tokens")
    torch.manual_seed(s.seed)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(str(target_dir))
    target = load_model(str(target_dir), torch.float32, torch.device("cpu")).eval().requires_grad_(False)
    train_ids, held_ids, meta = corpus(tokenizer, work, log, split)
    cfg = default_config(T.hidden_size(target), T.vocab_size(target), target=target_dir.name)
    head = EagleHead(cfg)
    init_weights(head)
    opt = torch.optim.AdamW(head.parameters(), lr=s.lr, betas=(0.9, 0.95), weight_decay=0.0)
    prog = Progress()
    if (work / "ckpt.json").exists():
        prog = _resume(head, opt, work, cfg, s)
        log(f"eagle: resumed at step {prog.step}, {prog.tokens_seen:,} tokens, {prog.seconds / 60:.1f} min")
    gen = np.random.default_rng([s.seed, prog.step])
    log(
        f"eagle: head of {param_count(head) / 1e6:.2f}M params on {target_dir} (d={cfg.hidden}, V={cfg.vocab}), "
        f"{len(train_ids):,} train tokens, {s.steps_ahead} steps unrolled"
    )

    def frac() -> float:
        return max(
            prog.seconds / (s.minutes * 60) if s.minutes else 0.0, prog.tokens_seen / s.tokens if s.tokens else 0.0
        )

    head.train()
    last_log = last_save = time.perf_counter()
    recent: list[float] = []
    while frac() < 1.0:
        t0 = time.perf_counter()
        lr = (
            s.lr * min(1.0, (prog.step + 1) / s.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac(), 1.0))))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        x = windows(train_ids, s.batch, s.seq_len, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.bf16 and x.device.type == "cpu"):
            loss, ce, top1 = losses(head, target, x, s.steps_ahead)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 0.5)
        opt.step()
        opt.zero_grad(set_to_none=True)
        prog.step += 1
        prog.tokens_seen += x.numel()
        recent.append(float(loss.detach()))
        now = time.perf_counter()
        prog.seconds += now - t0
        if now - last_log > 30:
            prog.last_loss = float(np.mean(recent[-20:]))
            prog.history.append([prog.step, prog.tokens_seen, round(prog.last_loss, 4)])
            log(
                f"eagle: step {prog.step} loss {prog.last_loss:.3f} top-1 by depth "
                f"{' '.join(f'{v:.2f}' for v in top1)} {x.numel() / (now - t0):,.0f} tok/s "
                f"{100 * frac():.1f}% of budget"
            )
            last_log = now
        if now - last_save > 300:
            _checkpoint(head, opt, prog, work, s)
            last_save = now
    if recent:
        prog.last_loss = float(np.mean(recent[-20:]))
    _checkpoint(head, opt, prog, work, s)
    held = evaluate(head, target, held_ids, s)
    log(f"eagle: done; held-out soft CE by depth {held['ce']}, top-1 agreement {held['top1']}")
    save_head(head, out)
    _card(out, cfg, s, prog, held, meta, param_count(head), target_dir)
    return out


RESUMABLE = ("steps_ahead", "batch", "seq_len", "lr", "seed", "bf16")  # what a resumed run must keep


def _checkpoint(head: EagleHead, opt: torch.optim.Optimizer, prog: Progress, work: Path, s: TrainSettings) -> None:
    from safetensors.torch import save_file

    tensors = {f"head.{k}": v.detach().contiguous() for k, v in head.state_dict().items()}
    steps = {}
    for i, p in enumerate(head.parameters()):
        st = opt.state.get(p, {})
        if st:
            tensors[f"opt.{i}.exp_avg"] = st["exp_avg"].contiguous()
            tensors[f"opt.{i}.exp_avg_sq"] = st["exp_avg_sq"].contiguous()
            steps[str(i)] = float(st["step"])
    save_file(tensors, str(work / "ckpt.safetensors.tmp"))
    meta = {
        "progress": asdict(prog),
        "opt_steps": steps,
        "config": json.loads(head.cfg.to_json()),
        "settings": {k: getattr(s, k) for k in RESUMABLE},
    }
    (work / "ckpt.json.tmp").write_text(json.dumps(meta))
    os.replace(work / "ckpt.safetensors.tmp", work / "ckpt.safetensors")
    os.replace(work / "ckpt.json.tmp", work / "ckpt.json")


def _resume(head: EagleHead, opt: torch.optim.Optimizer, work: Path, cfg: HeadConfig, s: TrainSettings) -> Progress:
    from safetensors.torch import load_file

    try:
        meta = json.loads((work / "ckpt.json").read_text())
        tensors = load_file(str(work / "ckpt.safetensors"))
    except (json.JSONDecodeError, OSError) as e:
        raise CascadeError(f"the checkpoint in {work} cannot be read ({e}): remove it or use another --work") from None
    if HeadConfig.from_dict(meta["config"]) != cfg:
        raise CascadeError(f"the checkpoint in {work} is for another head ({meta['config']}): use another --work")
    changed = {k: (v, getattr(s, k)) for k, v in meta.get("settings", {}).items() if getattr(s, k) != v}
    if changed:
        raise CascadeError(
            f"the checkpoint in {work} was trained with other settings "
            f"({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in changed.items())}): keep them to resume, "
            "or use another --work"
        )
    head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    for i, p in enumerate(head.parameters()):
        if str(i) in meta["opt_steps"]:
            opt.state[p] = {
                "step": torch.tensor(meta["opt_steps"][str(i)]),
                "exp_avg": tensors[f"opt.{i}.exp_avg"],
                "exp_avg_sq": tensors[f"opt.{i}.exp_avg_sq"],
            }
    return Progress(**meta["progress"])


def _card(
    out: Path,
    cfg: HeadConfig,
    s: TrainSettings,
    prog: Progress,
    held: dict[str, list[float]],
    meta: dict[str, Any],
    n_params: int,
    target_dir: Path,
) -> None:
    budget = " ".join(
        x for x in (f"--tokens {s.tokens}" if s.tokens else "", f"--minutes {s.minutes}" if s.minutes else "") if x
    )
    card = {
        "name": f"cascade-eagle-{target_dir.name}",
        "kind": "EAGLE draft head (one decoder layer over the target's features; embedding and LM head shared)",
        "target": target_dir.name,
        "parameters": n_params,
        "data": meta,
        "objective": f"soft token CE unrolled {s.steps_ahead} steps on its own outputs, weights {DECAY}^k",
        "tokens_seen": prog.tokens_seen,
        "steps": prog.step,
        "batch": s.batch,
        "seq_len": s.seq_len,
        "learning_rate": s.lr,
        "final_train_loss": None if math.isnan(prog.last_loss) else round(prog.last_loss, 4),
        "heldout_ce_by_depth": held["ce"],
        "heldout_top1_acceptance_by_depth": held["top1"],
        "training_minutes": round(prog.seconds / 60, 1),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}",
        "command": f"cascade eagle train --target {target_dir} --out {out} {budget} --seed {s.seed}",
        "loss_history": prog.history,
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    rows = "\n".join(f"| {k} | {v} |" for k, v in card.items() if k not in ("name", "loss_history"))
    (out / "README.md").write_text(
        f"# {card['name']}\n\nAn EAGLE draft head for the `{target_dir.name}` model, used by the `eagle` drafter "
        "plugin (`drafter: {plugin: eagle, options: {head: FOLDER}}`). It holds only its own layer: the "
        "target's embedding table and LM head are read from the target at load time.\n\n"
        "`heldout_top1_acceptance_by_depth[k]`: on held-out windows, how often the head's top token at draft depth "
        "k + 1 (fed its own outputs before it) equals the target's, given the path before it was the target's.\n\n"
        f"| field | value |\n|---|---|\n{rows}\n"
    )
