"""A lean forward pass for the architectures cascade ships and tests (GPT-2, Llama, Qwen2).

Written from the math, over the Hugging Face model's own weights (referenced, never
copied): the same numbers as the transformers forward, without its per-call machinery
(module dispatch, mask construction, cache bookkeeping, output objects), which is most
of a small model's step on a CPU (docs/fast-path.md). `RaggedLM` calls it in place of
`model(...)`, with the same cache (its `SlotLayer` buffers), masks and true positions,
so batches, holes and rollback work unchanged.

    GPT-2:        h = wte[x] + wpe[pos];  per block: h += proj(attn(LN1 h)); h += MLP(LN2 h)
                  (gelu, tanh approximation);  logits = LN_f(h) · Wᵀ
    Llama, Qwen2: h = E[x];  per layer: h += o(attn(RMS1 h)), q and k rotated by RoPE at pos
                  (grouped KV heads); h += down(silu(gate(RMS2 h)) ⊙ up(RMS2 h));
                  logits = RMS_f(h) · Wᵀ

`lean_forward(model)` returns None for anything else (other architectures, options this
file does not implement, sliding windows): the model then runs through transformers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

Forward = Any  # _GPT2 | _Llama: called as below, with a `head` (V, d)
GELUS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}


def lean_forward(model: Any) -> Forward | None:
    """A callable f(ids (B, K), positions (B, K), mask (B, 1, K, S + K) additive or None, cache, keep) ->
    the last hidden states after the final norm (B, keep or K, d) in the model's dtype, appending each
    layer's keys and values to `cache`; its `head` (V, d) turns them into logits. With `probe=[]`, each
    layer also appends the attention mass its slots received from the block (B, S + K) (SnapKV's scores).
    None when this model is not one the lean path implements exactly."""
    c = model.config
    kind = getattr(c, "model_type", "")
    if kind == "gpt2" and _gpt2_supported(c):
        return _GPT2(model)
    if kind in ("llama", "qwen2") and _llama_supported(c):
        return _Llama(model)
    return None


def _gpt2_supported(c: Any) -> bool:
    return (
        c.activation_function in GELUS
        and getattr(c, "scale_attn_weights", True)
        and not getattr(c, "scale_attn_by_inverse_layer_idx", False)
        and not getattr(c, "reorder_and_upcast_attn", False)
        and not getattr(c, "add_cross_attention", False)
    )


def _llama_supported(c: Any) -> bool:
    rope = getattr(c, "rope_parameters", None) or {}
    return (
        getattr(c, "hidden_act", "silu") == "silu"
        and rope.get("rope_type", "default") == "default"
        and not getattr(c, "mlp_bias", False)
        and not getattr(c, "use_sliding_window", False)
        and all(t == "full_attention" for t in (getattr(c, "layer_types", None) or ["full_attention"]))
    )


def _causal(k: int, past: int, ref: torch.Tensor) -> torch.Tensor | None:
    """The plain causal mask of K new tokens after `past` cached ones (None for one token: it sees all)."""
    if k == 1:
        return None
    allowed = torch.ones(k, past + k, dtype=torch.bool, device=ref.device).tril(past)
    return torch.zeros(allowed.shape, dtype=ref.dtype, device=ref.device).masked_fill_(
        ~allowed, torch.finfo(ref.dtype).min
    )


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    b, k, _ = x.shape
    return x.view(b, k, h, -1).transpose(1, 2)  # (B, H, K, D)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, _, k, _ = x.shape
    return x.transpose(1, 2).reshape(b, k, -1)  # (B, K, H·D)


class _GPT2:
    def __init__(self, model: Any):
        t = model.transformer
        c = model.config
        self.wte, self.wpe, self.blocks, self.ln_f = t.wte.weight, t.wpe.weight, list(t.h), t.ln_f
        self.head = model.lm_head.weight  # (V, d)
        self.heads, self.eps = c.n_head, c.layer_norm_epsilon
        self.gelu = GELUS[c.activation_function]

    def __call__(self, ids, positions, mask, cache, keep, probe=None):
        h = self.wte[ids] + self.wpe[positions]  # (B, K, d)
        past = cache.layers[0].get_seq_length()
        if mask is None:
            mask = _causal(ids.shape[1], past, h)
        for i, blk in enumerate(self.blocks):
            a = F.layer_norm(h, h.shape[-1:], blk.ln_1.weight, blk.ln_1.bias, self.eps)
            q, k, v = (
                torch.addmm(blk.attn.c_attn.bias, a.flatten(0, 1), blk.attn.c_attn.weight)
                .view(*a.shape[:2], -1)
                .chunk(3, dim=-1)
            )  # Conv1D: x·W + b, W (d, 3d)
            keys, values = cache.layers[i].update(_heads(k, self.heads), _heads(v, self.heads))  # (B, H, S + K, D)
            if probe is not None:
                probe.append(_attention_mass(_heads(q, self.heads), keys, mask))
            o = _merge(F.scaled_dot_product_attention(_heads(q, self.heads), keys, values, attn_mask=mask))
            h = h + torch.addmm(blk.attn.c_proj.bias, o.flatten(0, 1), blk.attn.c_proj.weight).view_as(h)
            a = F.layer_norm(h, h.shape[-1:], blk.ln_2.weight, blk.ln_2.bias, self.eps)
            m = F.gelu(torch.addmm(blk.mlp.c_fc.bias, a.flatten(0, 1), blk.mlp.c_fc.weight), approximate=self.gelu)
            h = h + torch.addmm(blk.mlp.c_proj.bias, m, blk.mlp.c_proj.weight).view_as(h)
        h = h[:, -keep:] if keep else h
        return F.layer_norm(h, h.shape[-1:], self.ln_f.weight, self.ln_f.bias, self.eps)


class _Llama:
    def __init__(self, model: Any):
        m = model.model
        c = model.config
        self.embed, self.layers, self.norm = m.embed_tokens.weight, list(m.layers), m.norm
        self.head = model.lm_head.weight  # (V, d)
        self.heads, self.kv_heads = c.num_attention_heads, c.num_key_value_heads
        self.eps = c.rms_norm_eps
        self.inv_freq = m.rotary_emb.inv_freq  # (D/2,)
        self.rope_scale = float(getattr(m.rotary_emb, "attention_scaling", 1.0))

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def __call__(self, ids, positions, mask, cache, keep, probe=None):
        h = self.embed[ids]  # (B, K, d)
        past = cache.layers[0].get_seq_length()
        if mask is None:
            mask = _causal(ids.shape[1], past, h)
        freqs = positions[..., None].float() * self.inv_freq.float()  # (B, K, D/2)
        emb = torch.cat([freqs, freqs], dim=-1)
        cos = (emb.cos() * self.rope_scale).to(h.dtype)[:, None]  # (B, 1, K, D)
        sin = (emb.sin() * self.rope_scale).to(h.dtype)[:, None]
        for i, layer in enumerate(self.layers):
            at = layer.self_attn
            a = self._rms(h, layer.input_layernorm.weight)
            q = _rope(_heads(F.linear(a, at.q_proj.weight, at.q_proj.bias), self.heads), cos, sin)
            k = _rope(_heads(F.linear(a, at.k_proj.weight, at.k_proj.bias), self.kv_heads), cos, sin)
            v = _heads(F.linear(a, at.v_proj.weight, at.v_proj.bias), self.kv_heads)
            keys, values = cache.layers[i].update(k, v)  # (B, H_kv, S + K, D), rotated keys as transformers caches them
            if probe is not None:
                probe.append(_attention_mass(q, keys.repeat_interleave(self.heads // self.kv_heads, dim=1), mask))
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=self.kv_heads != self.heads)
            h = h + F.linear(_merge(o), at.o_proj.weight, at.o_proj.bias)
            a = self._rms(h, layer.post_attention_layernorm.weight)
            mlp = layer.mlp
            h = h + F.linear(
                F.silu(F.linear(a, mlp.gate_proj.weight)) * F.linear(a, mlp.up_proj.weight), mlp.down_proj.weight
            )
        h = h[:, -keep:] if keep else h
        return self._rms(h, self.norm.weight)


def _attention_mass(q: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Σ over heads and queries of softmax(q·kᵀ/√D + mask): how much attention each slot gets. (B, S + K)"""
    scores = (q.float() @ keys.float().transpose(-1, -2)) / q.shape[-1] ** 0.5  # (B, H, K, S + K)
    if mask is not None:
        scores = scores + mask.float()
    return scores.softmax(-1).sum((1, 2))


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x·cos + rotate_half(x)·sin, rotate_half(x) = (−x₂, x₁) over the two halves of the head dimension."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin
