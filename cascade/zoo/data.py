"""Training data for the shipped model family: the running Python's standard library.

Code completion over the stdlib is the classic speculative-decoding workload: lots
of locally predictable tokens (indentation, names repeated from a few lines up)
mixed with hard ones. The corpus is whatever `sysconfig` says the stdlib is, so the
command is reproducible on any machine with the same Python.

Train / held-out is split *by file*, deterministically: a file is held out when the
first byte of sha1(relative path) is below `HELDOUT_FRACTION * 256`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cascade.errors import CascadeError

HELDOUT_FRACTION = 0.05  # ~5% of files are held out (by path hash, never by chance)
EOS = "<|endoftext|>"  # separates files; also the models' bos/eos/pad token (id 0)
SKIP_DIRS = {"site-packages", "__pycache__"}


@dataclass(frozen=True)
class SourceFile:
    relpath: str  # path relative to the stdlib root, '/'-separated
    text: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def python_version() -> str:
    return ".".join(str(v) for v in sys.version_info[:3])


def is_heldout(relpath: str) -> bool:
    return hashlib.sha1(relpath.encode()).digest()[0] < int(HELDOUT_FRACTION * 256)


def stdlib_files(root: Path | None = None) -> list[SourceFile]:
    """Every readable .py file under the stdlib root, sorted by path."""
    root = root or stdlib_root()
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_DIRS.intersection(rel.parts):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            out.append(SourceFile(rel.as_posix(), text))
    return out


def split_files(files: list[SourceFile]) -> tuple[list[SourceFile], list[SourceFile]]:
    train = [f for f in files if not is_heldout(f.relpath)]
    heldout = [f for f in files if is_heldout(f.relpath)]
    return train, heldout


def train_tokenizer(files: list[SourceFile], vocab_size: int, out_dir: Path):
    """Byte-level BPE over the training files, saved as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((f.text for f in files), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, unk_token=None)
    fast.model_max_length = 1024
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def separator_id(tokenizer) -> int:
    """The token that ends a file: the tokenizer's own EOS (the family's is `EOS`, id 0)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        eos = tokenizer.pad_token_id
    if eos is None:
        raise ValueError(f"{type(tokenizer).__name__} has neither an eos_token nor a pad_token to end files with")
    return int(eos)


def ids_dtype(vocab_size: int) -> type:
    """The narrowest unsigned dtype that holds every id of a `vocab_size`-token vocabulary."""
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def encode_files(tokenizer, files: list[SourceFile]) -> np.ndarray:
    """Concatenate files as token ids, each followed by the tokenizer's EOS. (N,) uint16, or uint32 for a
    vocabulary past 65536 tokens."""
    eos = separator_id(tokenizer)
    ids: list[int] = []
    batch = tokenizer([f.text for f in files], add_special_tokens=False)["input_ids"]
    for row in batch:
        ids.extend(row)
        ids.append(eos)
    return np.asarray(ids, dtype=ids_dtype(len(tokenizer)))


def cached_corpus(
    tokenizer: Any,
    work: Path,
    log: Callable[[str], None] = print,
    split: tuple[list[SourceFile], list[SourceFile]] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The training and held-out token arrays of the stdlib corpus (or of `split`: train and held-out
    files) in `tokenizer`'s ids, cached under `work` (`train.npy`, `heldout.npy`, `corpus.json`) and
    rebuilt when the cache was made with another vocabulary."""
    work.mkdir(parents=True, exist_ok=True)
    train_f, held_f, meta_f = work / "train.npy", work / "heldout.npy", work / "corpus.json"
    vocab = hashlib.sha1(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:16]
    cached = json.loads(meta_f.read_text()) if meta_f.exists() else {}
    if not (train_f.exists() and held_f.exists() and cached.get("tokenizer") == vocab):
        train, held = split if split is not None else split_files(stdlib_files())
        log(f"corpus: {len(train)} train files, {len(held)} held-out files (Python {python_version()})")
        np.save(train_f, encode_files(tokenizer, train))
        np.save(held_f, encode_files(tokenizer, held))
        meta = {
            "corpus": "Python standard library (cascade.zoo.data)",
            "python": python_version(),
            "train_files": len(train),
            "heldout_files": len(held),
            "tokenizer": vocab,
        }
        meta_f.write_text(json.dumps(meta))
    return np.load(train_f), np.load(held_f), json.loads(meta_f.read_text())


def random_windows(tokens: np.ndarray, batch: int, seq_len: int, gen: np.random.Generator):
    """`batch` windows of `seq_len` tokens at random starts in `tokens`, as a (B, T) int64 tensor."""
    import torch

    if len(tokens) <= seq_len + 1:
        raise CascadeError(f"the corpus has {len(tokens)} tokens: too few for windows of {seq_len}")
    starts = gen.integers(0, len(tokens) - seq_len - 1, size=batch)
    return torch.from_numpy(np.stack([tokens[s : s + seq_len] for s in starts]).astype(np.int64))
