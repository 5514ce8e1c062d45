"""Test helpers for cascade and its plugins: tiny models built from configs and a small tokenizer.

Plugin authors can use these too (`from cascade.testing import build_family`).

No hub access: the tokenizer is a byte-level BPE trained in-process on a little
Python source, and every model is randomly initialised from a config with a fixed
seed. A drafter "near" the target is the target with noise added to its weights,
so greedy blocks see both accepts and rejections.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

VOCAB = 320
ARCHS = ("gpt2", "llama", "qwen2", "smollm2")  # smollm2: a Llama of SmolLM2's shape (9 q / 3 kv heads, θ, tied)


def arch_params() -> list:
    """ARCHS for `pytest.mark.parametrize`: the first runs in the fast run, the others are marked `slow`
    (`./scripts/test.sh` runs them all)."""
    import pytest

    return [ARCHS[0], *(pytest.param(a, marks=pytest.mark.slow) for a in ARCHS[1:])]


CORPUS = (
    """
def add(a, b):
    return a + b

class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm(self):
        return (self.x ** 2 + self.y ** 2) ** 0.5

for i in range(10):
    print(i, add(i, i))
"""
    * 20
)


def make_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.save_pretrained(out)
    return fast


def make_wide_tokenizer(out: Path, vocab_size: int = 70_000, eos: str = "</s>"):
    """A byte-level BPE tokenizer unlike the family's: its EOS is `eos` (not `<|endoftext|>`), and its
    vocabulary is wider than uint16 (fillers pad it to `vocab_size`), with EOS the last id."""
    import json
    import tempfile

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        base = json.loads(make_tokenizer(Path(tmp)).backend_tokenizer.to_str())["model"]
    vocab = {t: i for t, i in base["vocab"].items() if t != "<|endoftext|>"}
    vocab = {t: i for i, t in enumerate(sorted(vocab, key=vocab.__getitem__))}
    vocab.update({f"<filler{i}>": i for i in range(len(vocab), vocab_size - 1)})
    vocab[eos] = vocab_size - 1
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in base["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([eos])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos)
    fast.save_pretrained(out)
    return fast


def make_config(arch: str, hidden: int = 64, layers: int = 2, vocab: int = VOCAB, positions: int = 256):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    if arch == "gpt2":
        return GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=positions, **common)
    if arch == "llama":
        return LlamaConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=positions,
            **common,
        )
    if arch == "smollm2":  # SmolLM2-135M's shape, small: grouped KV heads 9/3, RoPE θ = 100000, tied embeddings
        return LlamaConfig(
            hidden_size=9 * max(1, hidden // 8),
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=positions,
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
            **{**common, "tie_word_embeddings": True},
        )
    if arch == "qwen2":
        return Qwen2Config(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=positions,
            use_sliding_window=False,
            **common,
        )
    raise ValueError(arch)


def sharpen(model, factor: float = 8.0) -> None:
    """Logits × `factor`, for sharper distributions than a plain random init (greedy and sampling then see
    structure). A tied head is the input embedding too: there the embedding shrinks tenfold, so the layers
    outweigh it in the residual stream (else a random tied model just repeats its input token), and the final
    norm's weight grows by 10 × `factor`."""
    with torch.no_grad():
        if getattr(model.config, "tie_word_embeddings", False):
            model.get_input_embeddings().weight.mul_(0.1)
            model.base_model.norm.weight.mul_(10 * factor)
        else:
            model.get_output_embeddings().weight.mul_(factor)


def build_model(arch: str, out: Path, seed: int, tokenizer_dir: Path, noise_from=None, noise: float = 0.0, **cfg):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(arch, **cfg))
    sharpen(model)
    with torch.no_grad():
        if noise_from is not None:
            for p, src in zip(model.parameters(), noise_from.parameters()):
                p.copy_(src + noise * torch.randn_like(src) * src.std())
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 0
    model.generation_config.bos_token_id = 0
    model.save_pretrained(out)
    for f in tokenizer_dir.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return model


def write_policy(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


SCHEDULE_KEYWORDS = ("block_size", "min_block_size", "max_block_size", "confidence")  # policy_dict's


def policy_dict(
    target: Path,
    drafter: Path | None = None,
    mode="speculative",
    rule="none",
    alpha=0.0,
    plugin="hf-model",
    drafter_options=None,
    schedule="constant",
    schedule_options=None,
    **decoding,
) -> dict:
    """A policy's YAML data for tests: `schedule` names the schedule, whose options are `schedule_options`
    plus any of block_size, min_block_size, max_block_size, confidence given here; the other keywords are
    `decoding` fields."""
    options = dict(schedule_options or {})
    options.update({key: decoding.pop(key) for key in SCHEDULE_KEYWORDS if key in decoding})
    d = {
        "name": f"test-{mode}-{rule}",
        "target": {"model": str(target), "dtype": "float32", "device": "cpu"},
        "mode": mode,
        "rule": {"name": rule, "alpha": alpha},
        "decoding": {
            "temperature": 0.0,
            "max_new_tokens": 24,
            "seed": 0,
            "schedule": {"name": schedule, "options": options},
            **decoding,
        },
    }
    if mode != "target":
        opts = (
            drafter_options
            if drafter_options is not None
            else ({"model": str(drafter)} if plugin == "hf-model" else {})
        )
        d["drafter"] = {"plugin": plugin, "options": opts}
    return d


def build_family(root: Path, arch: str, tokenizer_dir: Path) -> dict[str, Path]:
    """target, near (the target plus weight noise: accepts and rejects) and small (a smaller model)."""
    base = root / arch
    target = build_model(arch, base / "target", 0, tokenizer_dir)
    build_model(arch, base / "near", 1, tokenizer_dir, noise_from=target, noise=0.3)
    build_model(arch, base / "small", 2, tokenizer_dir, hidden=32, layers=1)
    return {"target": base / "target", "near": base / "near", "small": base / "small"}


def family_builder(root: Path, tokenizer_dir: Path, extra=None):
    """The body of a session `family` fixture: arch -> build_family's folders, built once per arch;
    `extra(arch, folders)`, when given, adds folders of its own (a plugin's artefacts)."""
    cache: dict[str, dict[str, Path]] = {}

    def get(arch: str) -> dict[str, Path]:
        if arch not in cache:
            folders = build_family(root, arch, tokenizer_dir)
            if extra is not None:
                folders.update(extra(arch, folders))
            cache[arch] = folders
        return cache[arch]

    return get


def decode_joining(engine, prompts) -> list[list[int]]:
    """Decode `prompts` through one running batch, prompt i joining before step i while the earlier ones decode
    (continuous batching); each prompt's token ids, in order."""
    batch, out, step = engine.running_batch(), {}, 0
    while batch or step < len(prompts):
        if step < len(prompts):
            batch.join([engine.request_row(step, prompts[step])])
        for row, generation in batch.step():
            out[row.index] = generation.token_ids
        step += 1
    return [out[i] for i in range(len(prompts))]


def assert_first_tokens_follow(draw, pi, n: int) -> None:
    """Draw n first tokens (`draw(seed) -> token id`, seeds 0..n-1) and check them against the law `pi` (V,):
    nothing outside its support, and a chi-square test of the counts (p > 1e-3)."""
    from scipy.stats import chisquare

    counts = torch.zeros_like(pi)
    for seed in range(n):
        counts[draw(seed)] += 1
    support = pi > 1e-9
    assert counts[~support].sum() == 0, "tokens outside the law's support"
    expected = (pi[support] / pi[support].sum() * n).numpy()
    assert chisquare(counts[support].numpy(), expected).pvalue > 1e-3


def isolate(monkeypatch, home: Path) -> None:
    """What every test of cascade and its plugins runs under: no model hub, and a store home of its own."""
    import os

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("CASCADE_HOME", str(home))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Driver:
    """A drafter driven exactly as the engine drives it (`cascade.decode.drafting`), for a drafter's own tests:
    `start(prompts)`, then `draft(contexts, ks)` -> one `Draft` per row, `observe`, `keep`."""

    def __init__(self, drafter, params=None, lookahead: bool = False, factory=None, schedule: str = "constant"):
        from cascade.decode.drafter_rows import RowDrafters
        from cascade.decode.drafting import Drafting
        from cascade.verify.sampling import SamplingParams

        self.rows = RowDrafters(drafter, factory, drafter.name)
        self.params = params or SamplingParams()
        self.drafting = Drafting.of(self.rows, drafter, self.params, lookahead, None, drafter.name, schedule)
        self.generators: list = []

    def start(self, prompts, generators=None) -> None:
        self.rows.start(prompts)
        self.generators = list(generators) if generators is not None else [None] * len(prompts)

    def draft(self, contexts, ks, plans=None) -> list:
        """Row b's draft of up to ks[b] tokens after contexts[b] (plans: `DraftPlan`s with stop rules)."""
        from cascade.schedules.base import DraftPlan

        buffers = [torch.cat([c, c.new_zeros(k + 2)]) for c, k in zip(contexts, ks)]
        plans = plans if plans is not None else [DraftPlan(k) for k in ks]
        return self.drafting.draw(
            list(contexts),
            buffers,
            self.generators,
            [self.params] * len(contexts),
            plans,
            list(ks),
            [None] * len(contexts),
        )

    def observe(self, feedbacks) -> None:
        self.rows.observe(feedbacks)

    def keep(self, rows) -> None:
        self.rows.keep(rows)
        self.generators = [self.generators[b] for b in rows]
