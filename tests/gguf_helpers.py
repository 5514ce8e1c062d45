"""Write a small Llama-shaped model as a GGUF file, the way llama.cpp's converter lays it out, so the GGUF
path is tested without downloading one: llama.* metadata, blk.N.* tensor names, q/k rows permuted for
llama.cpp's RoPE, a gpt2 (byte-level BPE) tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permute of q/k rows (transformers reverses it on load)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_llama_gguf(
    model, tokenizer_dir: Path, out: Path, architecture: str = "llama", quantize: bool = False
) -> Path:
    """`model` (a LlamaForCausalLM) and the byte-level BPE tokenizer in `tokenizer_dir` as GGUF file `out`.
    `quantize` stores the MLP matrices whose rows hold whole blocks of 32 as Q8_0 (the rest stays F32)."""
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(out), architecture)
    w.add_name("tiny-llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(float((c.rope_parameters or {}).get("rope_theta", 10000.0)))
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_vocab_size(c.vocab_size)
    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    tokens += [f"[PAD{i}]" for i in range(c.vocab_size - len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t == "<|endoftext|>" else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_pad_token_id(0)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
    }
    if not c.tie_word_embeddings:
        names["lm_head.weight"] = "output.weight"
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        names.update(
            {
                p + "input_layernorm.weight": f"blk.{i}.attn_norm.weight",
                p + "self_attn.q_proj.weight": f"blk.{i}.attn_q.weight",
                p + "self_attn.k_proj.weight": f"blk.{i}.attn_k.weight",
                p + "self_attn.v_proj.weight": f"blk.{i}.attn_v.weight",
                p + "self_attn.o_proj.weight": f"blk.{i}.attn_output.weight",
                p + "post_attention_layernorm.weight": f"blk.{i}.ffn_norm.weight",
                p + "mlp.gate_proj.weight": f"blk.{i}.ffn_gate.weight",
                p + "mlp.up_proj.weight": f"blk.{i}.ffn_up.weight",
                p + "mlp.down_proj.weight": f"blk.{i}.ffn_down.weight",
            }
        )
    for hf, name in names.items():
        t = sd[hf]
        if name.endswith("attn_q.weight"):
            t = _permute(t, c.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            t = _permute(t, c.num_key_value_heads)
        if quantize and ".ffn_" in name and t.ndim == 2 and t.shape[-1] % 32 == 0:  # Q8_0 blocks of 32
            q = gguf.quants.quantize(np.ascontiguousarray(t), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
