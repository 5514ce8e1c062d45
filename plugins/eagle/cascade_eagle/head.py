"""The EAGLE draft head: one decoder layer over the target's features (SPEC.md "Tree drafts"; EAGLE-1/2/3).

At position i the head reads the target's feature f_i (its last hidden state after the final norm:
what the LM head reads) and the embedding of the token after it, x_{i+1}:

    h   = fc([e(x_{i+1}); f_i])                       (2d -> d)
    h  += attn(ln1(h))                                 causal self-attention, RoPE at the true position
    h  += mlp(ln2(h))                                  GELU, d -> m -> d
    g_i = ln_f(h)                                      a predicted feature: q(x_{i+2}) = softmax(LMHead(g_i))

The embedding e and the LM head are the target's own, frozen and shared (never copied into the
head's file). Drafting deeper, the head feeds its own g back in place of f (EAGLE-3's self-feeding,
which `cascade_eagle.train` trains for). The layer is written here, not borrowed from an
architecture, so one head fits any target (GPT-2, Llama, Qwen2): only d and the vocabulary matter.

Shapes: B rows, T positions, H heads of width c = d / H, S cached positions, V the vocabulary.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cascade import CascadeError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class HeadConfig:
    hidden: int  # d: the target's hidden size
    vocab: int  # the target's vocabulary (the LM head it shares)
    heads: int = 8
    mlp: int = 0  # the MLP's width; 0 = 4d
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    target: str = ""  # the target it was trained on (its card's name or folder), for messages

    @property
    def width(self) -> int:
        return self.mlp or 4 * self.hidden

    def to_json(self) -> str:
        return json.dumps({"model_type": "cascade-eagle-head", **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class EagleHead(nn.Module):
    inv_freq: torch.Tensor  # RoPE frequencies (c/2,), a buffer

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        if cfg.heads < 1 or cfg.hidden < 2 or cfg.hidden % cfg.heads or (cfg.hidden // cfg.heads) % 2:
            raise CascadeError(f"EAGLE head: hidden size {cfg.hidden} must split into {cfg.heads} heads of even width")
        d = cfg.hidden
        self.cfg = cfg
        self.fc = nn.Linear(2 * d, d)
        self.ln1 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.up = nn.Linear(d, cfg.width)
        self.down = nn.Linear(cfg.width, d)
        self.ln_f = nn.LayerNorm(d, eps=cfg.norm_eps)
        c = d // cfg.heads
        self.register_buffer(
            "inv_freq", cfg.rope_theta ** (-torch.arange(0, c, 2, dtype=torch.float32) / c), persistent=False
        )

    # ------------------------------------------------------------------ pieces (train and draft share them)

    def project(self, features: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """h = fc([e(x_{i+1}); f_i]). (B, T, d) each -> (B, T, d)"""
        return self.fc(torch.cat([embeds, features], dim=-1))

    def qkv_at(self, h: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of h at its true positions, RoPE applied. (B, T, d), (B, T) -> 3 x (B, H, T, c)"""
        b, t, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(b, t, 3, self.cfg.heads, d // self.cfg.heads).permute(2, 0, 3, 1, 4)
        angle = positions[:, None, :, None].float() * self.inv_freq  # (B, 1, T, c/2)
        cos, sin = angle.cos().to(h.dtype), angle.sin().to(h.dtype)
        return _rotate(q, cos, sin), _rotate(k, cos, sin), v

    def finish(self, h: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The rest of the layer after attention: g = ln_f(h'), h' = h + proj(a) + mlp.
        (B, T, d), (B, H, T, c) -> (B, T, d)"""
        b, _, t, _ = attended.shape
        h = h + self.proj(attended.transpose(1, 2).reshape(b, t, -1))
        h = h + self.down(F.gelu(self.up(self.ln2(h)), approximate="tanh"))
        return self.ln_f(h)

    # ------------------------------------------------------------------ drafting (a KV cache and a mask)

    def step(
        self,
        features: torch.Tensor,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        bias: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass over T new inputs that attend to the S cached keys and to each other.

        `bias` (T, S + T) is added to the scores (0 = allowed, -inf = not), None = causal over the new
        inputs. Returns the outputs g (B, T, d) and the new inputs' keys and values (B, H, T, c)."""
        h = self.project(features, embeds)
        q, k, v = self.qkv_at(h, positions)
        keys = k if past is None else torch.cat([past[0], k], dim=2)  # (B, H, S + T, c)
        values = v if past is None else torch.cat([past[1], v], dim=2)
        if bias is None:
            t, s = q.shape[2], keys.shape[2]
            bias = torch.zeros(t, s, dtype=q.dtype, device=q.device)
            bias[:, s - t :] = torch.full((t, t), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias.to(q.dtype))
        return self.finish(h, attended), k, v


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on the halves of the last dimension. (B, H, T, c), (B, 1, T, c/2) x 2"""
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


# ---------------------------------------------------------------------- files (no pickle)


def save_head(head: EagleHead, folder: Path, dtype: torch.dtype = torch.float16) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(head.cfg.to_json())
    save_file({k: v.detach().to(dtype).contiguous() for k, v in head.state_dict().items()}, str(folder / WEIGHTS))


def load_head(folder: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> EagleHead:
    """A head saved by `save_head`; a clear error for a missing or foreign folder."""
    from safetensors.torch import load_file

    cfg_path, weights = folder / CONFIG, folder / WEIGHTS
    if not cfg_path.is_file() or not weights.is_file():
        raise CascadeError(
            f"EAGLE head folder {folder} lacks {CONFIG} or {WEIGHTS}: train one with "
            "`cascade eagle train --target DIR --out DIR`"
        )
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CascadeError(f"EAGLE head {cfg_path} is not JSON: {e}") from None
    if raw.get("model_type") != "cascade-eagle-head":
        raise CascadeError(f"{folder} is not an EAGLE head (config model_type {raw.get('model_type')!r})")
    try:
        head = EagleHead(HeadConfig.from_dict(raw))
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise CascadeError(f"EAGLE head config {cfg_path} is not a valid head: {e}") from None
    state = load_file(str(weights))
    expected = head.state_dict()
    wrong = [k for k, v in expected.items() if k not in state or state[k].shape != v.shape]
    if wrong:
        raise CascadeError(
            f"EAGLE head {weights} does not match its {CONFIG} (missing or misshapen: "
            f"{', '.join(wrong[:4])}{' ...' if len(wrong) > 4 else ''})"
        )
    head.load_state_dict({k: state[k] for k in expected})  # extra tensors (none written today) are left alone
    return head.to(device=device, dtype=dtype).eval().requires_grad_(False)


def param_count(head: EagleHead) -> int:
    return sum(p.numel() for p in head.parameters())


def default_config(hidden: int, vocab: int, heads: int | None = None, target: str = "") -> HeadConfig:
    """The head for a target of width d: heads of width 64 where d allows it."""
    h = heads or max(1, hidden // 64)
    while h > 1 and (hidden % h or (hidden // h) % 2):
        h -= 1
    return HeadConfig(hidden=hidden, vocab=vocab, heads=h, target=target)


def init_weights(head: EagleHead, std: float = 0.02) -> None:
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)
    nn.init.normal_(head.down.weight, std=std / math.sqrt(2))
    nn.init.normal_(head.proj.weight, std=std / math.sqrt(2))
